"""The matrix products of one GPT-2 small decode step: PyTorch's stock kernels against the routes
of models/kernels.py, side by side in one run (interleaved rounds, medians).

    python benchmarks/matmul_bench.py [--rounds 5]

"blocks" is the 48 products of 12 blocks, each with its own weights (as in the model, they do
not fit in cache); "LM head" is the 768 x 50257 product. Where oneDNN has no bfloat16 product
(AVX2 only), a third column times several bfloat16 rows widened to float32 (what they took before
the native few-row kernel, which the routed column takes up to ``kernels.FEW_ROWS`` rows).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from repository import machine, repo_module

SHAPES = [(768, 2304), (768, 768), (768, 3072), (3072, 768)]  # [in, out] of c_attn, c_proj, c_fc, mlp.c_proj


def per_call(fn, calls: int = 3) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e3


def main() -> None:
    print(machine())
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    kernels = repo_module("models.kernels")
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ms per decode step, median of {args.rounds}")
    print(f"{'':28} {'stock':>8} {'routed':>8} {'ratio':>7} {'widened':>8}")
    for dtype in (torch.float32, torch.bfloat16):
        blocks = [[(torch.randn(i, o).to(dtype), torch.randn(o).to(dtype)) for i, o in SHAPES] for _ in range(12)]
        head = torch.randn(50257, 768).to(dtype)
        for rows in (1, 8, 32):
            inputs = {n: torch.randn(rows, n).to(dtype) for n in (768, 3072)}

            def stock_blocks():
                for layer in blocks:
                    for weight, bias in layer:
                        torch.addmm(bias, inputs[weight.shape[0]], weight)

            def routed_blocks():
                for layer in blocks:
                    for weight, bias in layer:
                        kernels.linear(inputs[weight.shape[0]], weight, bias, stored_in_out=True)

            def widened_blocks():
                for layer in blocks:
                    for weight, bias in layer:
                        kernels._float32_product(inputs[weight.shape[0]], weight, bias, stored_in_out=True)

            cases = {"blocks": (stock_blocks, routed_blocks, widened_blocks),
                     "LM head": (lambda: F.linear(inputs[768], head), lambda: kernels.linear(inputs[768], head, None, stored_in_out=False),
                                 lambda: kernels._float32_product(inputs[768], head, None, stored_in_out=False))}
            widens = rows > 1 and kernels._widens(head)
            with torch.no_grad():
                for label, (stock, routed, widened) in cases.items():
                    results = {"stock": [], "routed": [], "widened": []}
                    for _ in range(args.rounds):
                        results["stock"].append(per_call(stock))
                        results["routed"].append(per_call(routed))
                        if widens:
                            results["widened"].append(per_call(widened))
                    a, b = statistics.median(results["stock"]), statistics.median(results["routed"])
                    c = f"{statistics.median(results['widened']):8.2f}" if widens else f"{'':8}"
                    name = f"{str(dtype).removeprefix('torch.')}, {rows} row(s), {label}"
                    print(f"{name:28} {a:8.2f} {b:8.2f} {a / b:6.2f}x {c}", flush=True)


if __name__ == "__main__":
    main()
