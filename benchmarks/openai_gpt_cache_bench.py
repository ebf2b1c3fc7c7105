"""What the key/value cache is worth for OpenAI GPT: greedy generation of 128 tokens after a
32-token prompt, full-size GPT-1 with random weights (speed does not depend on the values).

    python benchmarks/openai_gpt_cache_bench.py [--new-tokens 128] [--repeats 2]

Rows: ours.generate (a preallocated cache, last-position logits); a plain loop with the
concatenating cache; ours recomputing the whole prefix every token (what a model without a
cache must do); Hugging Face's OpenAIGPTLMHeadModel.generate (it has no cache). All three produce
the same tokens (checked). Median tokens/s of the runs, interleaved.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from repository import repo_module


def greedy_cached(model, prompt, new_tokens):
    logits, past = model(prompt)
    out = [prompt]
    for _ in range(new_tokens):
        token = logits[:, -1].argmax(-1, keepdim=True)
        out.append(token)
        logits, past = model(token, past=past)
    return torch.cat(out, 1)


def greedy_recomputed(model, prompt, new_tokens):
    tokens = prompt
    for _ in range(new_tokens):
        tokens = torch.cat([tokens, model(tokens, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)], 1)
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    models = repo_module("models")

    torch.manual_seed(0)
    ours = models.OpenAIGPTLMHeadModel.from_config(models.OpenAIGPTConfig())
    runs = {"ours, generate (preallocated cache)": lambda p: ours.generate(p, max_new_tokens=args.new_tokens),
            "ours, key/value cache": lambda p: greedy_cached(ours, p, args.new_tokens),
            "ours, recomputing the prefix": lambda p: greedy_recomputed(ours, p, args.new_tokens)}
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        theirs = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig()).eval()
        theirs.load_state_dict(ours.state_dict(), strict=False)
        runs["Hugging Face generate (no cache)"] = lambda p: theirs.generate(
            p, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
            attention_mask=torch.ones_like(p), pad_token_id=0)
    except ImportError:
        pass

    prompt = torch.randint(0, 40478, (1, 32))
    speeds: dict[str, list[float]] = {}
    outputs = {}
    with torch.no_grad():
        for _ in range(args.repeats):
            for label, run in runs.items():
                start = time.perf_counter()
                outputs[label] = run(prompt)
                speeds.setdefault(label, []).append(args.new_tokens / (time.perf_counter() - start))
    reference = outputs["ours, generate (preallocated cache)"]
    cached = statistics.median(speeds["ours, generate (preallocated cache)"])
    print(f"OpenAI GPT, 32-token prompt, {args.new_tokens} new tokens, greedy, {torch.get_num_threads()} threads")
    print(f"{'':36} {'tokens/s':>9} {'generate is':>15}  same tokens")
    for label, values in speeds.items():
        median = statistics.median(values)
        same = torch.equal(outputs[label], reference)
        print(f"{label:36} {median:9.1f} {cached / median:14.1f}x faster  {same}")


if __name__ == "__main__":
    main()
