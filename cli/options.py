"""The command line's options, each checked by argparse before anything is loaded or printed.

Only the standard library is imported here, so ``--help`` and bad arguments answer at once
(importing torch takes seconds).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

DTYPES = ["float32", "bfloat16", "float16"]
QUANTIZE = ["int8", "int4"]


SEED_MAX = 2 ** 64 - 1  # what torch.Generator.manual_seed takes


def number(kind: type, minimum: float | None = None, maximum: float | None = None, above: float | None = None
           ) -> Callable[[str], float]:
    """An argparse ``type`` for a number in a range; the error names the range."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"must be > {above}, got {text}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


class _Formatter(argparse.HelpFormatter):
    """Shows each option's default, unless its help already says what the default is."""

    def _get_help_string(self, action):
        text = action.help or ""
        shown = action.default is not None and action.default is not False and action.default != argparse.SUPPRESS
        if "default" not in text and shown and action.option_strings:
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one line, not the usage plus a message
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _model_options(command: argparse.ArgumentParser, what: str) -> None:
    command.add_argument("--model", required=True, help=what + ": a checkpoint name (gpt2, openai-gpt, ...), "
                         "a hub repository id, a directory or a URL; GPT or GPT-2 by its config")
    command.add_argument("--dtype", choices=DTYPES, default="float32", help="the weights' dtype")
    command.add_argument("--quantize", choices=QUANTIZE, help="weight-only quantization of the projections and the "
                         "LM head, for CPU inference with float32 or bfloat16 (default: none)")
    command.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda, cuda:1, a GPU index, or "
                         "auto (a GPU where there is one)")


def _generate(commands) -> None:
    gen = commands.add_parser("generate", help="stream a continuation of a prompt to stdout")
    _model_options(gen, "the model")
    gen.add_argument("--prompt", required=True, help="the prompt text, or - to read it from stdin")
    gen.add_argument("--max-new-tokens", type=number(int, 1), default=50,
                     help="how many tokens to add at most (fewer where the model's context ends)")
    gen.add_argument("--temperature", type=number(float, 0), help="sample with this temperature; 0 is greedy "
                     "(default: greedy, or 1 where --top-k or --top-p asks for sampling)")
    gen.add_argument("--top-k", type=number(int, 0), help="sample from the k most likely tokens (default: 0, all)")
    gen.add_argument("--top-p", type=number(float, maximum=1, above=0),
                     help="sample from the smallest set of tokens with this much probability (default: 1, all)")
    gen.add_argument("--repetition-penalty", type=number(float, above=0), default=1.0,
                     help="divide the scores of tokens already present by this (1: off)")
    gen.add_argument("--seed", type=number(int, 0, SEED_MAX), help="make sampling reproducible (default: a random seed)")
    gen.add_argument("--num-return-sequences", type=number(int, 1), default=1,
                     help="how many continuations; more than 1 prints them whole instead of streaming")


def _score(commands) -> None:
    sc = commands.add_parser("score", help="print the perplexity of a text file")
    _model_options(sc, "the model")
    sc.add_argument("file", help="a UTF-8 text file")
    sc.add_argument("--max-length", type=number(int, 2), help="window length in tokens (default: the model's n_positions)")
    sc.add_argument("--stride", type=number(int, 1), help="how far each window moves (default: the window length)")


def _finetune(commands) -> None:
    for name, what in (("finetune-lm", "fine-tune a language model on text files"),
                       ("finetune-mc", "fine-tune the multiple-choice head (with the LM loss) on JSON Lines records")):
        ft = commands.add_parser(name, help=what + " (under torchrun: distributed data parallel)")
        ft.add_argument("--model", help="the checkpoint to start from (name, repo id, directory or URL; "
                                        "default: the one --resume names)")
        if name == "finetune-lm":
            ft.add_argument("--train", nargs="+", required=True, help="UTF-8 text files")
            ft.add_argument("--eval", nargs="+", help="text files for the perplexity after each epoch (default: none)")
            ft.add_argument("--block-size", type=number(int, 2), help="tokens per example (default: the model's n_positions)")
        else:
            ft.add_argument("--train", required=True, help='JSON Lines: {"context": ..., "choices": [...], "label": i}')
            ft.add_argument("--eval", help="records for the accuracy after each epoch (default: none)")
            ft.add_argument("--max-length", type=number(int, 2), help="tokens per choice (default: the model's n_positions)")
            ft.add_argument("--lm-coef", type=number(float, 0), default=0.5, help="weight of the language-model loss")
        ft.add_argument("--output", required=True, help="folder for checkpoints, metrics.jsonl and the final model")
        ft.add_argument("--epochs", type=number(int, 1), default=3, help="passes over the training data")
        ft.add_argument("--batch-size", type=number(int, 1), default=8, help="examples per process per micro-step")
        ft.add_argument("--grad-accum", type=number(int, 1), default=1, help="micro-steps per optimizer step")
        ft.add_argument("--lr", type=number(float, above=0), default=6.25e-5, help="peak learning rate (the GPT paper's)")
        ft.add_argument("--warmup", type=number(float, 0), default=0.002,
                        help="warmup: a fraction of the steps, or steps if >= 1")
        ft.add_argument("--weight-decay", type=number(float, 0), default=0.01, help="AdamW's, on matrices only")
        ft.add_argument("--max-grad-norm", type=number(float, 0), default=1.0, help="clip gradients to this norm (0: off)")
        ft.add_argument("--bf16", action="store_true", help="bfloat16 autocast (default: off)")
        ft.add_argument("--seed", type=number(int, 0, SEED_MAX), default=0, help="data order, dropout and new weights")
        ft.add_argument("--save-every", type=number(int, 0), default=0,
                        help="checkpoint every N steps, 0: only at each epoch's end")
        ft.add_argument("--max-steps", type=number(int, 0), default=0, help="stop after N optimizer steps (0: no limit)")
        ft.add_argument("--check-ranks-every", type=number(int, 0), default=0,
                        help="verify every N steps that ranks hold equal weights (0: never)")
        ft.add_argument("--resume", help="a checkpoint-STEP folder to go on from (default: start afresh)")


def _example(commands) -> None:
    run = commands.add_parser("example", help="run the hub pages' example offline, on a local or a small random model")
    run.add_argument("--model", help="a checkpoint directory (config.json, weights and vocabulary files), GPT or "
                                     "GPT-2 (default: a small random model of --family)")
    run.add_argument("--family", choices=["gpt2", "openai-gpt"], default="gpt2",
                     help="the random model's family, when no --model is given")
    run.add_argument("--vocab", help="a folder with the family's real vocab.json and merges.txt for the random model "
                                     "(default: a small vocabulary learned on the spot from the example's text)")


def parser() -> argparse.ArgumentParser:
    main = _Parser(prog="python hubconf.py", description="OpenAI GPT and GPT-2 from this repository. "
                   "Exit status: 0 done, 1 failed (one line on stderr), 2 bad arguments, 130 interrupted.")
    main.add_argument("--debug", action="store_true", help="show the full traceback of a failure (default: one line)")
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for add in (_generate, _score, _finetune, _example):
        add(commands)
    for command in commands.choices.values():  # also accepted after the command
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the full traceback of a failure (default: one line)")
    return main
