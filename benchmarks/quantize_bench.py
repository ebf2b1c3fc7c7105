"""Weight-only quantization (models/quantize.py) against the float routes, side by side in one
run: the products of GPT-2 small's shapes, greedy decoding speed, and fidelity.

    python benchmarks/quantize_bench.py [--rounds 5] [--new-tokens 32] [--fidelity-tokens 128]

GPT-2 small with random weights (normal, std 0.02; speed does not depend on the values). Products:
ms per call, one row (decode) and 8 rows, medians of interleaved rounds. Decode: tokens/s of
``generate`` after a 32-token prompt, medians (min-max) of interleaved repeats. Fidelity: max and
mean |logit error| against float32 over a 128-token text, and greedy-token agreement over 128
positions (each scheme's argmax at each position of float32's own greedy continuation), for the
random GPT-2 small and for the tiny random checkpoints the tests build.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch
from repository import machine, repo_module

SHAPES = [(768, 2304), (768, 768), (768, 3072), (3072, 768), (768, 50257)]  # [in, out]
SCHEMES = {"float32": None, "bfloat16": None, "int8": ("int8", 32), "int4 g32": ("int4", 32),
           "int4 g128": ("int4", 128)}
TINY = dict(vocab_size=96, n_positions=160, n_embd=32, n_layer=2, n_head=4)  # tests/conftest.py's, longer context


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def products(kernels, quantize, rounds: int) -> None:
    print(f"\nproducts, ms per call (median of {rounds} interleaved rounds of 20 calls)")
    print(f"{'[in, out]':16} {'rows':>4} " + " ".join(f"{name:>10}" for name in SCHEMES))
    for n_in, n_out in SHAPES:
        weight = torch.randn(n_in, n_out) * 0.02  # [in, out], as Conv1D stores it
        bias = torch.zeros(n_out)
        steps = {"float32": kernels.bind(weight, bias, stored_in_out=True),
                 "bfloat16": kernels.bind(weight.bfloat16(), bias.bfloat16(), stored_in_out=True)}
        for name, (scheme, group) in ((k, v) for k, v in SCHEMES.items() if v):
            steps[name] = quantize.QuantizedLinear.of(weight.t(), bias, scheme, group).bind()
        for rows in (1, 8):
            x = torch.randn(rows, n_in)
            inputs = {name: x.bfloat16() if name == "bfloat16" else x for name in SCHEMES}
            times: dict[str, list[float]] = {}
            with torch.no_grad():
                for name, step in steps.items():
                    step(inputs[name])  # warm-up: the first call picks (and packs) the kernel
                for _ in range(rounds):
                    for name, step in steps.items():
                        def twenty(step=step, x=inputs[name]):
                            for _ in range(20):
                                step(x)
                        times.setdefault(name, []).append(seconds(twenty) / 20 * 1e3)
            medians = {name: statistics.median(t) for name, t in times.items()}
            print(f"{str([n_in, n_out]):16} {rows:>4} " + " ".join(f"{medians[n]:10.3f}" for n in SCHEMES)
                  + f"   int8 {medians['float32'] / medians['int8']:.2f}x, int4 g32 "
                  f"{medians['float32'] / medians['int4 g32']:.2f}x float32's speed")


def activations(quantize, rounds: int) -> None:
    """Why the products run in bfloat16: the kernels on float32 activations (and scales) against
    bfloat16 ones, on the LM head's shape."""
    print(f"\nthe kernels' activation dtype, [768, 50257], ms per call (median of {rounds} interleaved rounds)")
    weight = torch.randn(50257, 768) * 0.02  # [out, in]
    layers = {scheme: quantize.QuantizedLinear.of(weight, None, scheme, 32) for scheme in ("int8", "int4")}
    for rows in (1, 8):
        times: dict[str, list[float]] = {}
        for _ in range(rounds):
            for scheme, layer in layers.items():
                for dtype in (torch.float32, torch.bfloat16):
                    x, scales = torch.randn(rows, 768, dtype=dtype), layer.scales.to(dtype)
                    if scheme == "int8":
                        call = partial(torch.ops.aten._weight_int8pack_mm, x, layer.qweight, scales)
                    else:
                        call = partial(torch.ops.aten._weight_int4pack_mm_for_cpu, x, layer.qweight, 32, scales)
                    call()
                    times.setdefault(f"{scheme} {str(dtype)[6:]}", []).append(seconds(call) * 1e3)
        print(f"  rows {rows}: " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in times.items()))


def variants(models, config, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    base = models.GPT2LMHeadModel.from_config(config)
    out = {}
    for name, scheme in SCHEMES.items():
        if scheme and scheme[0] == "int4" and config.n_embd % scheme[1]:
            continue  # the tiny models' 32 inputs take groups of 32 only
        model = models.GPT2LMHeadModel.from_config(config)
        model.load_state_dict(base.state_dict())
        if name == "bfloat16":
            model = model.to(torch.bfloat16)
        out[name] = model.quantize(*scheme) if scheme else model
    return out


def weight_bytes(model) -> int:
    tensors = {id(t): t for t in (*model.parameters(), *(b for m in model.modules() for b in _quantized(m)))}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _quantized(module) -> tuple:
    """A quantized layer's tensors: PyTorch's kernel's, and the native kernel's (int4 has its own)."""
    return (module.qweight, module.scales, *(module.native or ())) if hasattr(module, "qweight") else ()


def decode(built: dict, new_tokens: int, rounds: int) -> None:
    print(f"\ndecode, tokens/s (all rows), 32-token prompt + {new_tokens} new, median (min-max) of {rounds}")
    print(f"{'':10} {'weights MB':>10} {'batch 1':>22} {'batch 8':>22}")
    results: dict[tuple[str, int], list[float]] = {}
    prompts = {batch: torch.randint(0, 50257, (batch, 32)) for batch in (1, 8)}
    for model in built.values():
        model.generate(prompts[1], max_new_tokens=2)  # warm-up
    for _ in range(rounds):
        for batch, prompt in prompts.items():
            for name, model in built.items():
                took = seconds(lambda: model.generate(prompt, max_new_tokens=new_tokens, eos_token_id=[]))
                results.setdefault((name, batch), []).append(batch * new_tokens / took)
    for name, model in built.items():
        cells = []
        for batch in (1, 8):
            r = results[(name, batch)]
            ratio = statistics.median(r) / statistics.median(results[("float32", batch)])
            cells.append(f"{statistics.median(r):7.1f} ({min(r):.1f}-{max(r):.1f}) {ratio:4.2f}x")
        print(f"{name:10} {weight_bytes(model) / 1e6:10.0f} " + " ".join(f"{c:>28}" for c in cells))


@torch.no_grad()
def fidelity(label: str, built: dict, tokens: int) -> None:
    reference = built["float32"]
    vocab = reference.config.vocab_size
    torch.manual_seed(1)
    text = torch.randint(0, vocab, (1, tokens))
    greedy = reference.generate(text[:, :1], max_new_tokens=tokens - 1, eos_token_id=[])  # float32's own continuation
    want = reference(text).logits.float()
    want_greedy = reference(greedy).logits.float().argmax(-1)
    print(f"\nfidelity, {label}: |logit error| against float32 over {tokens} random tokens "
          f"(float32 logits: max |x| {want.abs().max():.3f}, std {want.std():.3f}); greedy agreement over "
          f"{tokens} positions of float32's continuation; first difference of free-running greedy")
    for name, model in list(built.items())[1:]:
        got = model(text).logits.float()
        agree = (model(greedy).logits.float().argmax(-1) == want_greedy).float().mean()
        own = model.generate(greedy[:, :1], max_new_tokens=tokens - 1, eos_token_id=[])
        differs = (own != greedy).nonzero()
        first = int(differs[0, 1]) if len(differs) else "none"
        error = (got - want).abs()
        print(f"  {name:10} max {error.max():.5f}  mean {error.mean():.5f}  agreement {agree:.3f}  "
              f"first difference {first}")


def main() -> None:
    print(machine())
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--fidelity-tokens", type=int, default=128)
    parser.add_argument("--only", default="products,decode,fidelity", help="a comma-separated subset")
    args = parser.parse_args()
    models, kernels, quantize = (repo_module(name) for name in ("models", "models.kernels", "models.quantize"))
    only = args.only.split(",")
    if "products" in only:
        products(kernels, quantize, args.rounds)
        activations(quantize, args.rounds)
    small = variants(models, models.GPT2Config.from_preset("gpt2")) if {"decode", "fidelity"} & set(only) else {}
    if "decode" in only:
        decode(small, args.new_tokens, args.rounds)
    if "fidelity" in only:
        fidelity("GPT-2 small, random weights (std 0.02)", small, args.fidelity_tokens)
        for seed in (0, 1):
            fidelity(f"tiny GPT-2 (tests' config, seed {seed})", variants(models, models.GPT2Config(**TINY), seed),
                     args.fidelity_tokens)


if __name__ == "__main__":
    main()
