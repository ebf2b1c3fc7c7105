"""Runs one command and turns its outcome into an exit status: 0 done, 1 failed, 2 bad arguments
(argparse's convention), 130 interrupted (the shell's for Ctrl-C). A failure is one line on stderr;
``--debug`` shows the traceback instead (the exit status stays the same)."""

from __future__ import annotations

import importlib
import os
import sys
import traceback

from .options import parser


class UsageError(Exception):
    """A bad argument that shows only once a file or checkpoint is read: exit status 2."""


# command -> the module whose run(args) does it
COMMANDS = {"generate": "generate", "score": "score", "finetune-lm": "finetune", "finetune-mc": "finetune",
            "example": "example"}


def describe(err: BaseException) -> str:
    """One line for an exception: its message, prefixed with its type unless the type says nothing
    more than "a bad value" or "an OS error"."""
    text = " ".join(str(err).split())
    if isinstance(err, (UsageError, ValueError, OSError)) and text:
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def run(args) -> None:
    """The command's module is imported only now: most of them import torch."""
    importlib.import_module(f"{__package__}.{COMMANDS[args.command]}").run(args)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        run(args)
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): nothing more can be written there
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except UsageError as err:
        return _failed(err, 2, debug)
    except Exception as err:  # noqa: BLE001 - any failure is reported in one line
        return _failed(err, 1, debug)
    return 0


def _failed(err: BaseException, status: int, debug: bool) -> int:
    """Report a failure (one line, or with --debug the traceback) and give its exit status, the
    same either way: a script's checks do not change with --debug."""
    if debug:
        traceback.print_exception(err, file=sys.stderr)
    else:
        sys.stderr.write(f"error: {describe(err)}\n")
    return status
