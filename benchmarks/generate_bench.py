"""Generation, prefill and loading speed, ours against Hugging Face transformers on the same
weights, side by side in one run. GPT-2 small with random weights (speed does not depend on the
values), 32-token prompts, 128 new tokens, greedy.

    python benchmarks/generate_bench.py [--repeats 3] [--new-tokens 128] [--only decode,prefill,load,process]

Each figure is the median of interleaved runs (min-max alongside); the machine may be shared.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch
from repository import REPO, machine, repo_module, scratch_dir

BANDWIDTH_NOTE = "batch-1 decoding reads every weight once per token: tokens/s <= memory bandwidth / weight bytes"


def timed(fn, repeats: int, results: dict, label: str, work: float) -> None:
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        results.setdefault(label, []).append(work / (time.perf_counter() - start))


def row(label: str, ours: list[float], theirs: list[float], unit: str, limit: float | None = None) -> str:
    """Medians (min-max) of both, and the median of the ratios of the runs made side by side: on a
    shared machine each pair saw the same load, the runs minutes apart did not."""
    ratios = [a / b for a, b in zip(ours, theirs)]
    bound = f"{limit:9.1f}" if limit is not None else f"{'':9}"
    return (f"{label:34} {statistics.median(ours):9.2f} ({min(ours):.2f}-{max(ours):.2f})"
            f" {statistics.median(theirs):9.2f} ({min(theirs):.2f}-{max(theirs):.2f})"
            f" {statistics.median(ratios):6.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) {bound}  {unit}")


def read_bandwidth() -> float:
    """Bytes per second this machine reads from memory: summing 1 GB of float32 (best of 5)."""
    data = torch.ones(1 << 28)
    best = min(_seconds(data.sum) for _ in range(5))
    return data.numel() * data.element_size() / best


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def decode_and_prefill(models, transformers, args, checkpoint: Path) -> None:
    bandwidth = read_bandwidth()
    print(f"memory read bandwidth (summing 1 GB): {bandwidth / 1e9:.1f} GB/s; the limit column is the tokens/s "
          "at which every weight is read once per decode step at that rate")
    print(f"{'':34} {'ours':>22} {'Hugging Face':>22} {'ratio (paired)':>20} {'limit':>9}")
    for dtype in (getattr(torch, name) for name in args.dtypes.split(",")):
        ours = models.GPT2LMHeadModel.from_pretrained(checkpoint, torch_dtype=dtype)
        theirs = transformers.GPT2LMHeadModel.from_pretrained(checkpoint, dtype=dtype).eval()
        for batch in (1, 8):
            prompt = torch.randint(0, 50257, (batch, 32))
            mask = torch.ones_like(prompt)
            mask[1:, :8] = 0  # rows after the first are left-padded
            n = args.new_tokens
            results: dict[str, list[float]] = {}
            with torch.no_grad():  # warm-up, untimed: first calls pick kernels (and pack bfloat16 weights)
                ours.generate(prompt, attention_mask=mask, max_new_tokens=2, pad_token_id=0)
                theirs.generate(prompt, attention_mask=mask, max_new_tokens=2, min_new_tokens=2, do_sample=False,
                                pad_token_id=0)
            runs = {"ours": lambda: ours.generate(prompt, attention_mask=mask, max_new_tokens=n, pad_token_id=0,
                                                  eos_token_id=[]),
                    "hf": lambda: theirs.generate(prompt, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                                  do_sample=False, pad_token_id=0)}
            for repeat in range(args.repeats):
                with torch.no_grad():  # who goes first alternates
                    for who in (("ours", "hf") if repeat % 2 == 0 else ("hf", "ours")):
                        timed(runs[who], 1, results, who, batch * n)
            name = str(dtype).removeprefix("torch.")
            weight_bytes = sum(p.numel() * p.element_size() for p in ours.parameters())
            print(row(f"decode {name}, batch {batch}", results["ours"], results["hf"], "tokens/s (all rows)",
                      batch * bandwidth / weight_bytes), flush=True)
        if dtype is torch.float32:
            x = torch.randint(0, 50257, (1, 1024))
            results = {}
            with torch.no_grad():
                for _ in range(args.repeats):
                    timed(lambda: ours(x, use_cache=False), 1, results, "ours", 1.0)
                    timed(lambda: theirs(x, use_cache=False), 1, results, "hf", 1.0)
            print(row("prefill 1024 tokens, float32", results["ours"], results["hf"], "forwards/s"), flush=True)
    weights = sum(p.numel() for p in ours.parameters())
    print(f"({BANDWIDTH_NOTE}; GPT-2 small has {weights / 1e6:.0f}M parameters: {weights * 4 / 1e6:.0f} MB in float32)")


LOAD = textwrap.dedent("""
    import importlib, importlib.util, sys, time, torch
    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    who, repo, checkpoint, dtype = sys.argv[1:5]
    dtype = getattr(torch, dtype)
    if who == "ours":
        spec = importlib.util.spec_from_file_location("hubconf", repo + "/hubconf.py")
        hub = importlib.util.module_from_spec(spec); spec.loader.exec_module(hub)
        cls = importlib.import_module(hub._PACKAGE + ".models").GPT2LMHeadModel
        load = lambda: cls.from_pretrained(checkpoint, torch_dtype=dtype)
    else:
        import transformers
        transformers.logging.set_verbosity_error()
        load = lambda: transformers.GPT2LMHeadModel.from_pretrained(checkpoint, dtype=dtype)
    # Warm up torch (its first operations start thread pools and pick kernels): that is not loading.
    with torch.no_grad():
        torch.nn.functional.linear(torch.ones(4, 64, dtype=dtype), torch.ones(64, 64, dtype=dtype)).max()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status("VmRSS")
    start = time.perf_counter()
    model = load()
    with torch.no_grad():
        for p in model.parameters():
            p.max()  # a ready model: every weight in memory
    seconds = time.perf_counter() - start
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    print(seconds, (status("VmHWM") - before) / weights)
""")


def loading(args, checkpoint: Path) -> None:
    script = scratch_dir() / "load.py"
    script.write_text(LOAD)
    file = checkpoint / "model.safetensors"
    reads = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        with open(file, "rb") as f:
            while f.read(1 << 24):
                pass
        reads.append(time.perf_counter() - start)
    read = statistics.median(reads)
    print(f"\nreading model.safetensors ({file.stat().st_size / 1e6:.0f} MB, page cache warm): {read * 1000:.0f} ms")
    for dtype in ("float32", "bfloat16"):
        results: dict[str, list[tuple[float, float]]] = {}
        for _ in range(args.repeats):
            for who in ("ours", "hf"):
                out = subprocess.run([sys.executable, str(script), who, str(REPO), str(checkpoint), dtype],
                                     capture_output=True, text=True, check=True).stdout.split()
                results.setdefault(who, []).append((float(out[0]), float(out[1])))
        for who, values in results.items():
            seconds = statistics.median(v[0] for v in values)
            peak = statistics.median(v[1] for v in values)
            print(f"load {dtype:9} {who:5}: {seconds * 1000:6.0f} ms = {seconds / read:4.1f}x the read; "
                  f"peak RSS growth {peak:.2f}x the weights")


PROCESS_HF = textwrap.dedent("""
    import sys, torch, transformers
    checkpoint = sys.argv[1]
    tokenizer = transformers.GPT2Tokenizer.from_pretrained(checkpoint)
    model = transformers.GPT2LMHeadModel.from_pretrained(checkpoint)
    ids = torch.tensor([tokenizer.encode(sys.argv[2])])
    out = model.generate(ids, max_new_tokens=1, do_sample=False, attention_mask=torch.ones_like(ids), pad_token_id=0)
    print(sys.argv[2] + tokenizer.decode(out[0, ids.size(1):]))
""")


def process_to_first_token(args, checkpoint: Path) -> None:
    script = scratch_dir() / "hf_generate.py"
    script.write_text(PROCESS_HF)
    commands = {"ours": [sys.executable, str(REPO / "hubconf.py"), "generate", "--model", str(checkpoint),
                         "--prompt", "Hello, my dog is", "--max-new-tokens", "1"],
                "hf": [sys.executable, str(script), str(checkpoint), "Hello, my dog is"]}
    results: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for who, command in commands.items():
            start = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True)
            results.setdefault(who, []).append(time.perf_counter() - start)
    ours, theirs = statistics.median(results["ours"]), statistics.median(results["hf"])
    print(f"\nwhole process to the first token: ours {ours:.2f} s, Hugging Face {theirs:.2f} s ({ours / theirs:.2f}x the time)")


def main() -> None:
    print(machine())
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--only", default="decode,load,process")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--vocab", default=str(REPO.parent / "shared" / "data" / "gpt2"))
    args = parser.parse_args()
    import transformers

    transformers.logging.set_verbosity_error()
    models = repo_module("models")
    torch.manual_seed(0)
    checkpoint = scratch_dir() / "gpt2-random"
    models.GPT2LMHeadModel.from_config(models.GPT2Config()).save_pretrained(checkpoint)
    for name in ("vocab.json", "merges.txt"):
        (checkpoint / name).write_bytes((Path(args.vocab) / name).read_bytes())
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads")
    parts = args.only.split(",")
    if "decode" in parts:
        decode_and_prefill(models, transformers, args, checkpoint)
    if "load" in parts:
        loading(args, checkpoint)
    if "process" in parts:
        process_to_first_token(args, checkpoint)


if __name__ == "__main__":
    main()
