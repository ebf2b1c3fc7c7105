"""Ours against llama.cpp and Hugging Face transformers on the same weights, side by side in one
run: batch-1 decoding at float32, bfloat16, int8 (llama.cpp's q8_0) and int4 (q4_0), the last two
also over bfloat16 activations, prefill of 1024 tokens, left-padded batch 8, and the fidelity of
int8/int4 beside q8_0/q4_0's.

    python benchmarks/llama_cpp_peer.py build     # once: llama.cpp from the llama-cpp-python sdist
    python benchmarks/peer_bench.py [--repeats 3] [--threads 2] [--only decode,prefill,batch,fidelity] [--depth 895]
    python benchmarks/peer_bench.py --device cuda [--size gpt2-xl]   # on a GPU: against Hugging Face only

GPT-2 small with random weights of the real shapes (normal, std 0.02), written as a Hugging Face
checkpoint and converted with llama.cpp's own converter. Speeds are medians of interleaved runs
(min-max), ratios the median of the runs made side by side. Without a llama.cpp build, its
columns are left empty. Hugging Face has no weight-only int8/int4 CPU kernel of its own: batch 8
compares our int8/int4 with its float32. On a GPU (``--device cuda``) only float32 and bfloat16 run
(our quantized kernels are the CPU's), against Hugging Face on the same GPU.
"""

from __future__ import annotations

import argparse
import logging
import re
import subprocess
import time
from pathlib import Path

import torch
from generate_bench import row
from repository import REPO, machine, repo_module, scratch_dir

import llama_cpp_peer

DTYPES = {"float32": ("f32", dict(torch_dtype=torch.float32)), "bfloat16": ("bf16", dict(torch_dtype=torch.bfloat16)),
          "int8": ("q8_0", dict(quantize="int8")), "int4 g32": ("q4_0", dict(quantize="int4")),
          # the same weights quantized over bfloat16 activations (and so a bfloat16 cache)
          "int8 over bf16": ("q8_0", dict(quantize="int8", torch_dtype=torch.bfloat16)),
          "int4 g32 over bf16": ("q4_0", dict(quantize="int4", torch_dtype=torch.bfloat16))}
CORPUS = REPO.parent / "shared" / "data" / "corpus" / "03_wiki_news.txt"


def seconds(fn) -> float:
    """Wall-clock seconds of ``fn()``, with the GPU's queued work finished at both ends."""
    sync = torch.cuda.synchronize if torch.cuda.is_initialized() else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def llama_available() -> bool:
    return all((llama_cpp_peer.BIN / tool).exists() for tool in llama_cpp_peer.TOOLS)


def checkpoint(models, vocab: Path, size: str) -> Path:
    torch.manual_seed(0)
    folder = scratch_dir() / f"{size}-random"
    models.GPT2LMHeadModel.from_config(models.GPT2Config.from_preset(size)).save_pretrained(folder)
    for name in ("vocab.json", "merges.txt"):
        (folder / name).write_bytes((vocab / name).read_bytes())
    return folder


def decode_rate(generate, prompt: torch.Tensor, n: int) -> float:
    """Tokens per second of ``generate(prompt, new)``'s last ``n`` steps: after a prompt of more
    than one token, its processing (timed alone, with one new token) is taken away."""
    if prompt.size(1) == 1:
        return n / seconds(lambda: generate(prompt, n))
    return n / (seconds(lambda: generate(prompt, n + 1)) - seconds(lambda: generate(prompt, 1)))


def decode(ours: dict, theirs: dict, gguf: dict, args) -> None:
    n, depth = args.new_tokens, args.depth
    after = f"{depth} tokens already in the cache (llama-bench -p 0 -n {n} -d {depth})" if depth else \
        f"a 1-token prompt (llama-bench -p 0 -n {n})"
    print(f"\nbatch-1 decode, tokens/s: {n} new tokens, greedy, after {after}")
    print(f"{'':34} {'ours':>22} {'peer':>22} {'ratio (paired)':>20}")
    prompt = (torch.randint(1, 50257, (1, depth), generator=torch.Generator().manual_seed(0)) if depth else
              torch.tensor([[464]])).to(args.device)
    for name, model in ours.items():
        model.generate(prompt[:, :1], max_new_tokens=4)  # warm-up: kernels chosen, weights packed
        if name in theirs:
            theirs[name].generate(prompt[:, :1], attention_mask=torch.ones_like(prompt[:, :1]), max_new_tokens=4,
                                  do_sample=False, pad_token_id=0)
        results: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            fixed_length = lambda p, k: model.generate(p, max_new_tokens=k, eos_token_id=[])  # noqa: E731
            results.setdefault("ours", []).append(decode_rate(fixed_length, prompt, n))
            if name in theirs:
                hf = theirs[name]
                results.setdefault("hf", []).append(decode_rate(lambda p, k: hf.generate(
                    p, attention_mask=torch.ones_like(p), max_new_tokens=k, min_new_tokens=k,
                    do_sample=False, pad_token_id=0), prompt, n))
            if gguf:
                results.setdefault("llama", []).append(
                    llama_cpp_peer.bench(gguf[DTYPES[name][0]], threads=args.threads, new_tokens=n, depth=depth))
        if "llama" in results:
            print(row(f"{name} vs llama.cpp {DTYPES[name][0]}", results["ours"], results["llama"], "tokens/s"))
        if "hf" in results:
            print(row(f"{name} vs Hugging Face", results["ours"], results["hf"], "tokens/s"))
    same = torch.equal(ours["float32"].generate(prompt, max_new_tokens=n, eos_token_id=[]), theirs["float32"].generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n, do_sample=False,
        pad_token_id=0))
    print(f"greedy float32, {n} tokens: {'token-identical to' if same else 'DIFFERENT from'} Hugging Face's")


def prefill(ours: dict, theirs: dict, gguf: dict, args) -> None:
    print("\nprefill of 1024 tokens, tokens/s: all logits (as a forward without logits_to_keep gives) "
          "against Hugging Face, the last position's (logits_to_keep=1) against llama.cpp (llama-bench -p 1024 -n 0)")
    print(f"{'':34} {'ours':>22} {'peer':>22} {'ratio (paired)':>20}")
    x = torch.randint(0, 50257, (1, 1024)).to(args.device)
    for name, model in ours.items():  # quantized: against llama.cpp only (Hugging Face has no such kernel)
        hf = theirs.get(name)
        with torch.no_grad():
            model(x, use_cache=False)  # warm-up at the timed shape: a GPU picks its kernels per shape
            if hf is not None:
                hf(x, use_cache=False)
            results: dict[str, list[float]] = {}
            for _ in range(args.repeats):
                if hf is not None:
                    results.setdefault("all", []).append(1024 / seconds(lambda: model(x, use_cache=False)))
                    results.setdefault("hf", []).append(1024 / seconds(lambda: hf(x, use_cache=False)))
                results.setdefault("last", []).append(1024 / seconds(lambda: model(x, use_cache=False, logits_to_keep=1)))
                if gguf:
                    results.setdefault("llama", []).append(
                        llama_cpp_peer.bench(gguf[DTYPES[name][0]], threads=args.threads, prompt=1024))
        if hf is not None:
            print(row(f"{name}, all logits vs Hugging Face", results["all"], results["hf"], "tokens/s"))
        if "llama" in results:
            print(row(f"{name}, last logits vs llama.cpp", results["last"], results["llama"], "tokens/s"))


def batch(ours: dict, theirs: dict, args) -> None:
    n = args.new_tokens // 2
    print(f"\nbatch 8, left-padded (rows 2-8 lose 8 of 32 prompt tokens), {n} new tokens, tokens/s of all rows; "
          "int8 and int4 against Hugging Face's float32")
    print(f"{'':34} {'ours':>22} {'Hugging Face':>22} {'ratio (paired)':>20}")
    prompt = torch.randint(0, 50257, (8, 32)).to(args.device)
    mask = torch.ones_like(prompt)
    mask[1:, :8] = 0
    for name, model in ours.items():
        hf = theirs.get(name, theirs["float32"])
        model.generate(prompt, attention_mask=mask, max_new_tokens=2, pad_token_id=0)
        results: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            results.setdefault("ours", []).append(8 * n / seconds(
                lambda: model.generate(prompt, attention_mask=mask, max_new_tokens=n, pad_token_id=0, eos_token_id=[])))
            results.setdefault("hf", []).append(8 * n / seconds(lambda: hf.generate(
                prompt, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)))
        print(row(f"{name}, batch 8", results["ours"], results["hf"], "tokens/s"))


def one_row_logits(model, ids: torch.Tensor) -> torch.Tensor:
    """The logits of positions 64-126 of each row of ``ids``, fed one token at a time over the cache
    (as decoding runs: the one-row kernels, native ones included), ``[rows * 63, vocab]``."""
    found = []
    for tokens in ids:
        past = None
        for t in range(127):
            out = model(tokens[None, t:t + 1], past_key_values=past, use_cache=True)
            past = out.past_key_values
            if t >= 64:
                found.append(out.logits[0, -1].float())
    return torch.stack(found)


def kld_rows(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """KL(reference || other) per position, from logits ``[N, vocab]``."""
    p = reference.log_softmax(-1)
    return (p.exp() * (p - other.log_softmax(-1))).sum(-1)


@torch.no_grad()
def fidelity(ours: dict, gguf: dict, args, tokenizer) -> None:
    """llama-perplexity's KL-divergence statistics for q8_0/q4_0 against its f32 on chunks of
    128 tokens of a text (positions 64-126 of each), and ours on the same chunks of our tokens,
    the quantized models fed one token at a time (as they decode) against float32's full forward."""
    text = CORPUS.read_text(encoding="utf-8")[:60000]
    chunks = args.chunks
    ids = torch.tensor(tokenizer.encode(text)[:chunks * 128]).view(chunks, 128)
    reference = ours["float32"]
    want = reference(ids).logits[:, 64:127].float().reshape(-1, 50257)
    greedy = reference.generate(ids[:1, :1], max_new_tokens=127, eos_token_id=[])
    print(f"\nfidelity against float32 on the same weights: {chunks} chunks of 128 tokens of {CORPUS.name}, "
          "positions 64-126 (llama-perplexity -c 128 --kl-divergence); greedy agreement: each model's argmax at "
          "each position of float32's own 128-token greedy continuation")
    print(f"{'':22} {'mean KLD':>10} {'max KLD':>10} {'same top':>9} {'max |dlogit|':>13} {'mean |dlogit|':>14} "
          f"{'greedy agree':>13}")
    want_greedy = reference(greedy).logits.argmax(-1)
    for name in [name for name in ours if name.startswith("int")]:
        got = one_row_logits(ours[name], ids)  # decoding's kernels: one row at a time
        kld = kld_rows(want, got)
        same = (got.argmax(-1) == want.argmax(-1)).float().mean() * 100
        error = (got - want).abs()
        agree = (ours[name](greedy).logits.argmax(-1) == want_greedy).float().mean()
        print(f"{'ours ' + name:22} {kld.mean():10.6f} {kld.max():10.6f} {same:8.2f}% {error.max():13.5f} "
              f"{error.mean():14.5f} {agree:13.3f}")
    if not gguf:
        return
    folder = scratch_dir()
    (folder / "text.txt").write_text(text, encoding="utf-8")
    base = folder / "base.kld"
    common = ["-f", str(folder / "text.txt"), "-c", "128", "--chunks", str(chunks), "-t", str(args.threads),
              "--kl-divergence-base", str(base)]
    subprocess.run([str(llama_cpp_peer.BIN / "llama-perplexity"), "-m", str(gguf["f32"]), *common],
                   check=True, capture_output=True)
    for kind in ("q8_0", "q4_0"):
        out = subprocess.run([str(llama_cpp_peer.BIN / "llama-perplexity"), "-m", str(gguf[kind]), *common,
                              "--kl-divergence"], check=True, capture_output=True, text=True)
        log = out.stdout + out.stderr
        mean = re.search(r"Mean\s+KLD:\s+([0-9.eE+-]+)", log)
        most = re.search(r"Maximum KLD:\s+([0-9.eE+-]+)", log)
        same = re.search(r"Same top p:\s+([0-9.]+)", log)
        print(f"{'llama.cpp ' + kind:22} {float(mean.group(1)):10.6f} {float(most.group(1)):10.6f} "
              f"{float(same.group(1)):8.2f}%")


class Timings(logging.Handler):
    """route_choice's debug lines (the candidates' times of each choice), kept for the summary."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno == logging.DEBUG and record.getMessage().startswith("kernels for"):
            self.lines.append(record.getMessage())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--depth", type=int, default=0, help="decode after this many prompt tokens (default: one)")
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--only", default="decode,prefill,batch,fidelity")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="cuda: float32 and bfloat16 against Hugging Face on the GPU")
    parser.add_argument("--size", default="gpt2", help="the architecture: gpt2, gpt2-medium, gpt2-large, gpt2-xl")
    parser.add_argument("--vocab", default=str(REPO.parent / "shared" / "data" / "gpt2"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # a benchmark's own process; the library never does this
    print(machine())
    on_cpu = args.device == "cpu"
    if not on_cpu:
        print(f"device: {torch.cuda.get_device_name(args.device)}; our quantized models and llama.cpp run on the "
              "CPU only: their rows are left out")
    import transformers

    transformers.logging.set_verbosity_error()
    models, tokenizers = repo_module("models"), repo_module("tokenizers")
    route_choice = repo_module("models.route_choice")
    timings = Timings()  # each kernel choice measured in this run, with its candidates' times
    logging.getLogger(route_choice.__name__).addHandler(timings)
    logging.getLogger(route_choice.__name__).setLevel(logging.DEBUG)
    folder = checkpoint(models, Path(args.vocab), args.size)
    gguf = {}
    if on_cpu and llama_available():
        gguf = llama_cpp_peer.convert(folder)
        print(f"peer: {llama_cpp_peer.commit()}, {args.threads} threads")
    elif on_cpu:
        print("llama.cpp is not built (python benchmarks/llama_cpp_peer.py build): its columns are left out")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {args.threads} threads, "
          f"{args.size}")
    ours = {name: models.GPT2LMHeadModel.from_pretrained(folder, device_map=args.device, **options)
            for name, (_, options) in DTYPES.items() if on_cpu or "quantize" not in options}
    theirs = {name: transformers.GPT2LMHeadModel.from_pretrained(folder, dtype=getattr(torch, name)).eval().to(args.device)
              for name in ("float32", "bfloat16")}
    only = args.only.split(",")
    with torch.no_grad():
        if "decode" in only:
            decode(ours, theirs, gguf, args)
        if "prefill" in only:
            prefill(ours, theirs, gguf, args)
        if "batch" in only:
            batch(ours, theirs, args)
    if "fidelity" in only and on_cpu:
        fidelity(ours, gguf, args, tokenizers.GPT2Tokenizer.from_pretrained(folder))
    print("\nkernels chosen for one row on this machine: " + "; ".join(
        f"{' '.join(map(str, key))}: {name}" for key, name in route_choice.chosen().items()))
    if timings.lines:  # not where the choices were kept on disk by an earlier run
        print("measured in this run:\n  " + "\n  ".join(timings.lines))


if __name__ == "__main__":
    main()
