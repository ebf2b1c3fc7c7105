"""Mutation fuzzing of the checkpoint formats: every mutant of a valid checkpoint must give a model
or an error of this library (``GPTHubError``), never another exception, a hang or a crash.

Used by tests/test_fuzz_checkpoints.py (a few hundred mutants per format) and, for longer runs, as
a script:

    python tests/fuzz_checkpoints.py --mutants 20000 [--format safetensors] [--seed 1]
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from conftest import TINY, models, repo_module  # noqa: E402

FIXTURES = HERE / "fixtures" / "openai"
errors = repo_module("errors")


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three random edits: flipped bytes, a cut, an inserted or deleted run, a copied range,
    a digit changed (headers are JSON and text), or the file cut short."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(7)
        at = rng.randrange(max(len(data), 1))
        if kind == 0 and data:
            data[at] ^= 1 << rng.randrange(8)
        elif kind == 1 and data:
            data[at] = rng.randrange(256)
        elif kind == 2:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif kind == 3:
            del data[at:at + rng.randint(1, 64)]
        elif kind == 4 and data:
            start = rng.randrange(len(data))
            data[at:at + 8] = data[start:start + 8]
        elif kind == 5:
            digits = [i for i in range(min(len(data), 4096)) if 48 <= data[i] <= 57]
            if digits:
                data[rng.choice(digits)] = rng.choice(b"0123456789-")
        else:
            del data[at:]
    return bytes(data)


class Format:
    """A valid checkpoint folder, the files worth mutating in it, and how it is loaded."""

    def __init__(self, name: str, build: Callable[[Path], None], targets: list[str], load: Callable[[Path], object]):
        self.name, self.build, self.targets, self.load = name, build, targets, load


def _hf(weights_name: str, quantize: str | None = None):
    def build(folder: Path) -> None:
        torch.manual_seed(0)
        model = models.GPT2LMHeadModel(models.GPT2Config(**TINY))
        if quantize is not None:
            model.quantize(quantize)
        model.save_pretrained(folder)
        if weights_name != "model.safetensors":
            torch.save(model.state_dict(), folder / weights_name)
            (folder / "model.safetensors").unlink()
    return build


def _copy(fixture: str):
    def build(folder: Path) -> None:
        shutil.copytree(FIXTURES / fixture, folder, dirs_exist_ok=True)
    return build


FORMATS = {
    "safetensors": Format("safetensors", _hf("model.safetensors"), ["model.safetensors"],
                          models.GPT2LMHeadModel.from_pretrained),
    "safetensors-int4": Format("safetensors-int4", _hf("model.safetensors", "int4"), ["model.safetensors"],
                               models.GPT2LMHeadModel.from_pretrained),
    "bin": Format("bin", _hf("pytorch_model.bin"), ["pytorch_model.bin"], models.GPT2LMHeadModel.from_pretrained),
    "tf": Format("tf", _copy("gpt2"), ["model.ckpt.index", "model.ckpt.data-00000-of-00001", "hparams.json"],
                 models.GPT2LMHeadModel.from_pretrained),
    "npy": Format("npy", _copy("gpt1"), ["params_shapes.json", "params_0.npy", "params_1.npy", "params_5.npy"],
                  lambda folder: models.OpenAIGPTLMHeadModel.from_pretrained(folder, n_head=2)),
}


def fuzz(fmt: Format, mutants: int, seed: int = 0) -> dict[str, int]:
    """Load ``mutants`` mutants of ``fmt``; raise AssertionError on the first outcome that is
    neither a model nor a GPTHubError. Returns how many loaded and how many were refused."""
    rng = random.Random(seed)
    outcomes = {"loaded": 0, "refused": 0}
    with tempfile.TemporaryDirectory() as tmp:
        original = Path(tmp) / "original"
        fmt.build(original)
        assert isinstance(fmt.load(original), torch.nn.Module)  # the unmutated checkpoint loads
        pristine = {name: (original / name).read_bytes() for name in fmt.targets}
        folder = Path(tmp) / "mutant"
        shutil.copytree(original, folder)
        for index in range(mutants):
            target = rng.choice(fmt.targets)
            for name, data in pristine.items():
                (folder / name).write_bytes(mutate(data, rng) if name == target else data)
            try:
                model = fmt.load(folder)
            except errors.GPTHubError:
                outcomes["refused"] += 1
                continue
            except Exception as error:  # noqa: BLE001 (the point of the test)
                raise AssertionError(f"{fmt.name} mutant {index} (seed {seed}) of {target}: "
                                     f"{type(error).__name__}: {error}") from error
            assert isinstance(model, torch.nn.Module)
            outcomes["loaded"] += 1
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mutants", type=int, default=5000)
    parser.add_argument("--format", choices=list(FORMATS), action="append")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # mutants that load log unused or new weights
    for name in args.format or list(FORMATS):
        print(name, fuzz(FORMATS[name], args.mutants, args.seed), flush=True)


if __name__ == "__main__":
    main()
