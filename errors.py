"""The one base class of the errors this library raises on purpose, and the errors about
arguments that every part of it shares.

Each error is also the built-in type that fits it (``ValueError`` for a bad value or file,
``TypeError`` for a wrong type, ``OSError`` for a download or the disk), so code that catches
those keeps working, and ``except GPTHubError`` catches everything this library reports.
"""

from __future__ import annotations

import difflib


class GPTHubError(Exception):
    """A bad argument, a bad file or a failed download, reported by this library."""


class InvalidArgumentError(GPTHubError, ValueError):
    """An argument's value is out of its range or does not fit the others (its name is in the message)."""


class ArgumentTypeError(GPTHubError, TypeError):
    """An argument is of the wrong type (its name is in the message)."""


class UnknownArgumentError(GPTHubError, TypeError):
    """A keyword argument that nothing takes, likely a typo (the message names close matches)."""

    @classmethod
    def naming(cls, unknown: list[str], known: list[str], where: str) -> UnknownArgumentError:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            hints.append(f"{name!r}" + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""))
        return cls(f"{where} got unexpected keyword argument{'s' if len(unknown) > 1 else ''} {', '.join(hints)}")
