"""Fine-tuning steps per second: one process against two under torchrun (gloo), at the same global
batch, on GPT-2 small with random weights and GPT-2's vocabulary.

    python benchmarks/finetune_bench.py [--block-size 128] [--global-batch 4] [--steps 10]

Each setting runs ``finetune-lm`` twice, for a few steps and for ``--steps`` more; the difference
of the two wall times, divided by the extra steps, is the time per step without start-up, loading
and the final save.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wall_time(processes: int, steps: int, args, checkpoint: Path, text: Path, out: Path) -> float:
    per_process = args.global_batch // processes
    command = ["hubconf.py", "finetune-lm", "--model", str(checkpoint), "--train", str(text), "--output", str(out),
               "--block-size", str(args.block_size), "--batch-size", str(per_process), "--max-steps", str(steps),
               "--epochs", "100"]
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
        "--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    start = time.perf_counter()
    subprocess.run(launcher + command, cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--global-batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--vocab", default=str(REPO.parent / "shared" / "data" / "gpt2"))
    args = parser.parse_args()

    import torch

    from repository import repo_module, scratch_dir

    models = repo_module("models")
    root = scratch_dir()
    checkpoint = root / "gpt2-random"
    torch.manual_seed(0)
    models.GPT2LMHeadModel.from_config(models.GPT2Config()).save_pretrained(checkpoint)
    for name in ("vocab.json", "merges.txt"):
        (checkpoint / name).write_bytes((Path(args.vocab) / name).read_bytes())
    corpus = sorted((Path(args.vocab).parent / "corpus").glob("*.txt"))
    text = root / "train.txt"
    text.write_text("".join(p.read_text(encoding="utf-8") for p in corpus)[:400_000], encoding="utf-8")

    print(f"GPT-2 small (124M), block {args.block_size}, global batch {args.global_batch}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads on this machine")
    for processes in (1, 2):
        short = wall_time(processes, 2, args, checkpoint, text, root / f"short{processes}")
        long = wall_time(processes, 2 + args.steps, args, checkpoint, text, root / f"long{processes}")
        per_step = (long - short) / args.steps
        print(f"{processes} process(es) x batch {args.global_batch // processes}: {per_step:.2f} s per step, "
              f"{1 / per_step:.2f} steps/s, {args.global_batch * args.block_size / per_step:.0f} tokens/s")


if __name__ == "__main__":
    main()
