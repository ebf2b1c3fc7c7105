"""Tokenizer throughput on the shared corpus, ours against the peers, side by side in one run.

    python benchmarks/tokenizers_bench.py [--data ../shared/data] [--repeats 3] [--openai-encoder PATH]

Each row is MB/s (corpus bytes / seconds) encoding the 2.9 MB corpus line by line and file by
file, every tokenizer starting cold (a new instance, empty caches), runs interleaved and repeated;
the median is shown with min-max. Peers:
- OpenAI's GPT-2 ``encoder.py`` (openai/gpt-2's ``src/encoder.py``): given with --openai-encoder,
  else taken from the ``gpt_2_simple`` source package on PyPI, which ships it unchanged;
- tiktoken over the same ranks (raw ``encode_ordinary``, no API around it);
- Hugging Face transformers' ``GPT2Tokenizer`` / ``OpenAIGPTTokenizer`` (tokenizers-backed);
- GPT-1: the original ``text_utils.TextEncoder`` steps one by one (ftfy.fix_text, its
  text_standardize, spaCy, per-token BPE with a dict cache), as that repository is not packaged.
Every peer's ids are compared with ours; a mismatch is printed, not hidden.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from repository import REPO, repo_module, scratch_dir


def openai_encoder_module(path: str | None):
    if path is None:
        folder = str(scratch_dir())
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        "-d", folder, "gpt_2_simple==0.8.1"], check=True)
        archive = next(Path(folder).glob("gpt_2_simple-*.tar.gz"))
        with tarfile.open(archive) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("src/encoder.py"))
            tar.extract(member, folder, filter="data")
        path = str(Path(folder) / member.name)
    spec = importlib.util.spec_from_file_location("openai_gpt2_encoder", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure(label, make, items, mb, results, reference=None):
    """Time one cold pass; record MB/s under ``label``."""
    encode = make()
    start = time.perf_counter()
    ids = [encode(x) for x in items]
    results.setdefault(label, []).append(mb / (time.perf_counter() - start))
    if reference is not None and ids != reference:
        bad = sum(a != b for a, b in zip(ids, reference))
        print(f"  note: {label} differs from ours on {bad} of {len(ids)} items", flush=True)
    return ids


def report(title, results, baseline):
    print(f"\n{title}")
    print(f"{'tokenizer':44} {'MB/s median (min-max)':>24} {'vs ' + baseline:>12}")
    base = statistics.median(results[baseline])
    for label, values in results.items():
        median = statistics.median(values)
        print(f"{label:44} {median:8.2f} ({min(values):.2f}-{max(values):.2f}) {median / base:11.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--openai-encoder", default=None, help="path to OpenAI's GPT-2 src/encoder.py")
    parser.add_argument("--only", choices=["gpt2", "openai-gpt"], default=None)
    args = parser.parse_args()
    data = Path(args.data)
    tokenizers = repo_module("tokenizers")
    transformers = importlib.import_module("transformers") if importlib.util.find_spec("transformers") else None
    texts = [p.read_bytes().decode("utf-8") for p in sorted((data / "corpus").glob("*.txt"))]
    lines = [line for text in texts for line in text.splitlines(keepends=True)]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    print(f"corpus: {mb:.2f} MB, {len(lines)} lines, {len(texts)} files; python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores")

    if args.only in (None, "gpt2"):
        gpt2 = data / "gpt2"
        openai = openai_encoder_module(args.openai_encoder)

        def openai_encoder():
            encoder = json.loads((gpt2 / "encoder.json").read_text(encoding="utf-8"))
            merges = [tuple(m.split()) for m in (gpt2 / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:-1]]
            return openai.Encoder(encoder=encoder, bpe_merges=merges).encode

        def ours(**options):
            tokenizer = tokenizers.GPT2Tokenizer.from_pretrained(gpt2, **options)
            tokenizer.encode("")  # builds the tiktoken ranks (loading, not encoding); the cache stays empty
            return tokenizer.encode

        peers = {"OpenAI encoder.py": openai_encoder, "ours, pure Python": lambda: ours(use_tiktoken=False)}
        if importlib.util.find_spec("tiktoken") is not None:
            peers["ours, tiktoken accelerator"] = ours
            peers["tiktoken (raw encode_ordinary)"] = lambda: tokenizers.GPT2Tokenizer.from_pretrained(gpt2)._accelerator().encode_ordinary
        if transformers is not None:
            peers["Hugging Face GPT2Tokenizer"] = lambda: transformers.GPT2Tokenizer.from_pretrained(str(gpt2)).encode
        for kind, items in (("line by line", lines), ("file by file", texts)):
            results: dict[str, list[float]] = {}
            for _ in range(args.repeats):
                reference = measure("ours, pure Python", peers["ours, pure Python"], items, mb, results)
                for label, make in peers.items():
                    if label != "ours, pure Python":
                        measure(label, make, items, mb, results, reference)
            report(f"GPT-2, {kind}", results, "OpenAI encoder.py")

    if args.only in (None, "openai-gpt"):
        gpt1 = data / "openai-gpt"
        openai_gpt = repo_module("tokenizers.openai_gpt")
        bpe = repo_module("tokenizers.bpe")

        def original_pipeline():
            import ftfy
            import spacy

            nlp = spacy.blank("en")
            nlp.max_length = 10**8
            encoder = json.loads((gpt1 / "encoder_bpe_40000.json").read_text(encoding="utf-8"))
            merges = (gpt1 / "vocab_40000.bpe").read_text(encoding="utf-8").split("\n")[1:-1]
            ranks = {tuple(m.split()): i for i, m in enumerate(merges)}
            cache = {}

            def word_bpe(token):
                if token not in cache:
                    joined = " ".join(bpe.merge_symbols([*token[:-1], token[-1] + "</w>"], ranks))
                    cache[token] = "\n</w>" if joined == "\n  </w>" else joined
                return cache[token]

            return lambda text: [encoder.get(t, 0) for tok in nlp(openai_gpt.text_standardize(ftfy.fix_text(text)))
                                 for t in word_bpe(tok.text.lower()).split(" ")]

        def ours():
            tokenizer = tokenizers.OpenAIGPTTokenizer.from_pretrained(gpt1)
            tokenizer.encode("load spaCy")  # the import is not encoding
            tokenizer._cache.clear()
            tokenizer._word_cache.clear()
            return tokenizer.encode

        peers = {"original pipeline (step for step)": original_pipeline}
        if transformers is not None:
            peers["Hugging Face OpenAIGPTTokenizer"] = lambda: transformers.OpenAIGPTTokenizer.from_pretrained(str(gpt1)).encode
        for kind, items in (("line by line", lines), ("file by file", texts)):
            results = {}
            for _ in range(args.repeats):
                reference = measure("ours", ours, items, mb, results)
                for label, make in peers.items():
                    measure(label, make, items, mb, results, reference)
            report(f"OpenAI GPT, {kind}", results, "original pipeline (step for step)")


if __name__ == "__main__":
    main()
