"""Where a batch-1 decoding step's time goes, on GPT-2 small's shapes: how fast each one-row kernel
candidate streams its weights, how much of a step is products, and what the first call of a
process pays for choosing kernels.

    python benchmarks/decode_parts_bench.py [--rounds 3]

1. GB/s of each candidate models/route_choice.py times (PyTorch's route, the native builds),
   over 48 copies of the block shapes (as a step reads them) and the LM head, best of the rounds.
2. A step of ``generate`` (128 tokens, best of 3) against the 49 products of that step called
   alone with the model's own bound products: the rest is everything else in the step.
3. The first ``generate`` call of a new process: with no kernel choices kept (timed), with the
   choices file of the run before, and with the native kernels off.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch
from repository import REPO, machine, repo_module, scratch_dir

SHAPES = [(768, 2304), (768, 768), (768, 3072), (3072, 768)]  # [in, out] of a block's products
KINDS = ("float32", "bfloat16", "int8", "int4")


def best(fn, rounds: int) -> float:
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def candidates(kernels, quantize, kind: str, n_in: int, n_out: int, head: bool) -> dict:
    """The one-row products route_choice would time for this shape, on a new weight of zeros."""
    if kind in ("int8", "int4"):
        layer = quantize.QuantizedLinear(n_in, n_out, not head, kind, 32, torch.float32)
        return layer._zeros()._candidates()
    dtype = getattr(torch, kind)
    if head:
        return kernels._candidates(torch.zeros(n_out, n_in, dtype=dtype), None, False)
    return kernels._candidates(torch.zeros(n_in, n_out, dtype=dtype), torch.zeros(n_out, dtype=dtype), True)


def streaming(kernels, quantize, rounds: int) -> None:
    print("\n1. one-row products, GB/s of weights streamed (48 block products of 12 layers; the LM head)")
    for kind in KINDS:
        width = {"float32": 4, "bfloat16": 2, "int8": 1, "int4": 0.5}[kind]
        layers = [[candidates(kernels, quantize, kind, i, o, False) for i, o in SHAPES] for _ in range(12)]
        head = candidates(kernels, quantize, kind, 768, 50257, True)
        names = sorted(set(layers[0][0]) | set(head))
        cells = []
        for name in names:
            xs = {n: torch.zeros(1, n, dtype=torch.float32 if kind.startswith("int") else getattr(torch, kind))
                  for n in (768, 3072)}
            with torch.no_grad():
                if name in layers[0][0]:
                    calls = [(c[name], xs[i]) for layer in layers for c, (i, _) in zip(layer, SHAPES)]
                    blocks = 12 * sum(i * o for i, o in SHAPES) * width / best(lambda: [f(x) for f, x in calls], rounds)
                else:
                    blocks = float("nan")
                lm = 768 * 50257 * width / best(lambda: head[name](xs[768]), rounds) if name in head else float("nan")
            cells.append(f"{name} {blocks / 1e9:.1f} / {lm / 1e9:.1f}")
        print(f"  {kind:9} (blocks / head): " + "; ".join(cells))


def step_split(models, checkpoint: Path) -> None:
    print("\n2. a decoding step (generate, 128 tokens from 1) against its 49 products called alone, ms")
    prompt = torch.tensor([[464]])
    for kind in KINDS:
        options = {"quantize": kind} if kind.startswith("int") else {"torch_dtype": getattr(torch, kind)}
        model = models.GPT2LMHeadModel.from_pretrained(checkpoint, **options)
        dtype = torch.float32 if kind.startswith("int") else getattr(torch, kind)
        with torch.no_grad():
            model.generate(prompt, max_new_tokens=4)
            step = best(lambda: model.generate(prompt, max_new_tokens=128, eos_token_id=[]), 3) / 128
            parts = [(lin.bind(), n) for block in model.transformer.h for lin, n in (
                (block.attn.c_attn, 768), (block.attn.c_proj, 768), (block.mlp.c_fc, 768), (block.mlp.c_proj, 3072))]
            parts.append((model.lm_head.bind(), 768))
            xs = {n: torch.zeros(1, 1, n, dtype=dtype) for n in (768, 3072)}
            products = best(lambda: [p(xs[n]) for p, n in parts], 20)
        print(f"  {kind:9} step {step * 1e3:6.2f}  products {products * 1e3:6.2f}  rest {(step - products) * 1e3:5.2f}")


FIRST = textwrap.dedent("""
    import importlib, importlib.util, sys, time, torch
    spec = importlib.util.spec_from_file_location("hubconf", sys.argv[1] + "/hubconf.py")
    hub = importlib.util.module_from_spec(spec); spec.loader.exec_module(hub)
    models = importlib.import_module(hub._PACKAGE + ".models")
    kind = sys.argv[3]
    options = {"quantize": kind} if kind.startswith("int") else {"torch_dtype": getattr(torch, kind)}
    model = models.GPT2LMHeadModel.from_pretrained(sys.argv[2], **options)
    with torch.no_grad():
        start = time.perf_counter()
        model.generate(torch.tensor([[464]]), max_new_tokens=1)
    print(time.perf_counter() - start)
""")


def first_calls(checkpoint: Path) -> None:
    print("\n3. the first generate call (1 new token) of a new process, s: no kernel choices kept / the "
          "choices of the run before / native kernels off")
    script = scratch_dir() / "first.py"
    script.write_text(FIRST)
    for kind in KINDS:
        folder = str(scratch_dir())  # a builds folder of its own: no choices kept yet
        seconds = []
        for env in ({"GPT_HUB_NATIVE_DIR": folder}, {"GPT_HUB_NATIVE_DIR": folder}, {"GPT_HUB_NATIVE": "0"}):
            out = subprocess.run([sys.executable, str(script), str(REPO), str(checkpoint), kind], check=True,
                                 capture_output=True, text=True, env={**__import__("os").environ, **env})
            seconds.append(float(out.stdout.split()[-1]))
        print(f"  {kind:9} " + " / ".join(f"{s:.2f}" for s in seconds) + "  (the first includes compiling the builds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    models, kernels, quantize = (repo_module(name) for name in ("models", "models.kernels", "models.quantize"))
    torch.manual_seed(0)
    checkpoint = scratch_dir() / "gpt2-random"
    models.GPT2LMHeadModel.from_config(models.GPT2Config()).save_pretrained(checkpoint)
    streaming(kernels, quantize, args.rounds)
    step_split(models, checkpoint)
    first_calls(checkpoint)


if __name__ == "__main__":
    main()
