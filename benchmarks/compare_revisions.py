"""This checkout against another checkout of the repository (an older commit), side by side in
one process: decode and prefill speed on the same weights, interleaved, and loading time and peak
memory in fresh processes (GPT-2 small with random weights, 32-token prompts, greedy); GPT-2's
tokenizer on the corpus's first 20,000 lines, plain and with two added tokens.

    git worktree add --detach ../old COMMIT
    python benchmarks/compare_revisions.py --old ../old [--repeats 5] [--new-tokens 64] [--only tokenizer]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from generate_bench import LOAD, row, timed
from repository import REPO, machine, repo_module, scratch_dir


def decode(args, checkouts: dict[str, Path], checkpoint: Path) -> None:
    print(f"{'':34} {'new':>22} {'old':>22} {'new/old (paired)':>20}")
    models = {who: repo_module("models", root) for who, root in checkouts.items()}
    for dtype in (getattr(torch, name) for name in args.dtypes.split(",")):
        loaded = {who: m.GPT2LMHeadModel.from_pretrained(checkpoint, torch_dtype=dtype) for who, m in models.items()}
        for batch in (1, 8):
            prompt = torch.randint(0, 50257, (batch, 32))
            mask = torch.ones_like(prompt)
            mask[1:, :8] = 0  # rows after the first are left-padded
            results: dict[str, list[float]] = {}
            with torch.no_grad():
                for model in loaded.values():  # warm-up, untimed
                    model.generate(prompt, attention_mask=mask, max_new_tokens=2, pad_token_id=0)
                for repeat in range(args.repeats):  # who goes first alternates
                    for who in (("new", "old") if repeat % 2 == 0 else ("old", "new")):
                        timed(lambda: loaded[who].generate(prompt, attention_mask=mask, max_new_tokens=args.new_tokens,
                                                           pad_token_id=0, eos_token_id=[]),
                              1, results, who, batch * args.new_tokens)
            name = str(dtype).removeprefix("torch.")
            print(row(f"decode {name}, batch {batch}", results["new"], results["old"], "tokens/s (all rows)"), flush=True)
        x = torch.randint(0, 50257, (1, 1024))
        results = {}
        with torch.no_grad():
            for repeat in range(args.repeats):
                for who in (("new", "old") if repeat % 2 == 0 else ("old", "new")):
                    timed(lambda: loaded[who](x, use_cache=False), 1, results, who, 1.0)
        print(row(f"prefill 1024, {name}", results["new"], results["old"], "forwards/s"), flush=True)


def tokenizer(args, checkouts: dict[str, Path]) -> None:
    data = Path(args.data)
    lines = [line for path in sorted((data / "corpus").glob("*.txt"))
             for line in path.read_text(encoding="utf-8").splitlines()][:20000]
    modules = {who: repo_module("tokenizers", root) for who, root in checkouts.items()}
    for label, options, added in (("tiktoken", {}, []), ("pure Python", {"use_tiktoken": False}, []),
                                  ("tiktoken, 2 added tokens", {}, ["<x>", "<y>"])):
        made = {who: m.GPT2Tokenizer.from_pretrained(data / "gpt2", **options) for who, m in modules.items()}
        for tokenizer in made.values():
            tokenizer.add_tokens(added)
            for line in lines:  # warm-up, untimed: fills the pieces' caches
                tokenizer.encode(line)
        results: dict[str, list[float]] = {}
        for repeat in range(2 * args.repeats):
            for who in (("new", "old") if repeat % 2 == 0 else ("old", "new")):
                timed(lambda: [made[who].encode(line) for line in lines], 1, results, who, len(lines))
        print(row(f"encode, {label}", results["new"], results["old"], "lines/s"), flush=True)


def loading(args, checkouts: dict[str, Path], checkpoint: Path) -> None:
    script = scratch_dir() / "load.py"
    script.write_text(LOAD)
    for dtype in args.dtypes.split(","):
        results: dict[str, list[tuple[float, float]]] = {}
        for repeat in range(args.repeats):
            for who in (("new", "old") if repeat % 2 == 0 else ("old", "new")):
                out = subprocess.run([sys.executable, str(script), "ours", str(checkouts[who]), str(checkpoint), dtype],
                                     capture_output=True, text=True, check=True).stdout.split()
                results.setdefault(who, []).append((float(out[0]), float(out[1])))
        for who, values in results.items():
            seconds = statistics.median(v[0] for v in values)
            peak = statistics.median(v[1] for v in values)
            print(f"load {dtype:9} {who}: {seconds * 1000:6.0f} ms; peak RSS growth {peak:.2f}x the weights", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="another checkout of this repository")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--only", choices=["models", "tokenizer"], help="one half of the comparison")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="the vocabularies and corpus")
    args = parser.parse_args()
    checkouts = {"new": REPO, "old": Path(args.old).resolve()}
    print(machine())
    if args.only != "models":
        tokenizer(args, checkouts)
    if args.only == "tokenizer":
        return
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "gpt2"
        models = repo_module("models")
        torch.manual_seed(0)
        models.GPT2LMHeadModel.from_config(models.GPT2Config()).save_pretrained(checkpoint)
        decode(args, checkouts, checkpoint)
        loading(args, checkouts, checkpoint)


if __name__ == "__main__":
    main()
