"""llama.cpp as a benchmark peer: built once from the llama-cpp-python source distribution (its
``vendor/llama.cpp`` is a full source tree), CPU only, into the ignored folder ``build/llama.cpp``.

    python benchmarks/llama_cpp_peer.py build            # download the sdist and build (minutes)
    python benchmarks/llama_cpp_peer.py convert DIR      # DIR: a Hugging Face GPT-2 checkpoint

``convert`` writes ``DIR/gguf/gpt2-{f32,bf16,q8_0,q4_0}.gguf``: the first three by llama.cpp's own
``convert_hf_to_gguf.py`` (with its bundled ``gguf-py``), q4_0 by ``llama-quantize --pure``; it adds
``n_ctx`` to ``DIR/config.json``, which the converter needs (give it a checkpoint of your own, as
peer_bench.py does). Nothing here is imported by the library or the tests.

With gcc 12, llama.cpp's AMX int8 kernels crash ("Illegal instruction") on quantized models, and
its ``GGML_AMX_*`` options do nothing while ``GGML_NATIVE=ON``; compiler flags that forbid AMX
turn them off, so the build keeps every other native feature (AVX-512, VNNI, BF16).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

from repository import REPO

BUILD = REPO / "build" / "llama.cpp"
BIN = BUILD / "cmake" / "bin"
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
TOOLS = ("llama-bench", "llama-quantize", "llama-perplexity")
TYPES = ("f32", "bf16", "q8_0", "q4_0")
SDIST_VERSION = "0.3.36"  # vendor/llama.cpp at 0c1e570 (2026-10-01), the commit the issue measured


def source() -> Path:
    """The unpacked llama.cpp tree, downloading the newest sdist the first time."""
    found = sorted(BUILD.glob(f"llama_cpp_python-{SDIST_VERSION}/vendor/llama.cpp"))
    if found:
        return found[-1]
    BUILD.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    f"llama-cpp-python=={SDIST_VERSION}", "-d", str(BUILD)], check=True)
    archive = BUILD / f"llama_cpp_python-{SDIST_VERSION}.tar.gz"
    with tarfile.open(archive) as tar:
        tar.extractall(BUILD, filter="data")
    return BUILD / f"llama_cpp_python-{SDIST_VERSION}" / "vendor" / "llama.cpp"


def build() -> None:
    """Configure and build the three tools, CPU only (nothing happens when they exist)."""
    if all((BIN / tool).exists() for tool in TOOLS):
        return
    tree = source()
    configure = ["cmake", "-S", str(tree), "-B", str(BUILD / "cmake"), "-G", "Ninja",
                 "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF",
                 "-DLLAMA_OPENSSL=OFF", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                 "-DLLAMA_BUILD_SERVER=OFF", f"-DCMAKE_C_FLAGS={NO_AMX}", f"-DCMAKE_CXX_FLAGS={NO_AMX}"]
    subprocess.run(configure, check=True)
    subprocess.run(["cmake", "--build", str(BUILD / "cmake"), "-j", str(os.cpu_count() or 2),
                    "--target", *TOOLS], check=True)


def commit() -> str:
    """The llama.cpp version built (the sdist's name and the tree's build info, when present)."""
    tree = source()
    info = BUILD / "cmake" / "common" / "build-info.cpp"
    text = info.read_text(errors="replace") if info.exists() else ""
    found = re.search(r'LLAMA_COMMIT\s*=\s*"([^"]+)"', text)
    return f"{tree.parents[1].name}, llama.cpp {found.group(1) if found else 'unknown commit'}"


def convert(checkpoint: Path) -> dict[str, Path]:
    """GGUF files of a Hugging Face GPT-2 checkpoint, one per type (kept; made once)."""
    checkpoint = Path(checkpoint)
    out = checkpoint / "gguf"
    out.mkdir(exist_ok=True)
    config_path = checkpoint / "config.json"
    config = json.loads(config_path.read_text())
    if "n_ctx" not in config:  # the converter reads the context length under this name
        config["n_ctx"] = config.get("n_positions", 1024)
        config_path.write_text(json.dumps(config, indent=2))
    tree = source()
    env = dict(os.environ, PYTHONPATH=str(tree / "gguf-py"), NO_LOCAL_GGUF="")
    files = {kind: out / f"gpt2-{kind}.gguf" for kind in TYPES}
    for kind in ("f32", "bf16", "q8_0"):
        if not files[kind].exists():
            subprocess.run([sys.executable, str(tree / "convert_hf_to_gguf.py"), str(checkpoint),
                            "--outtype", kind, "--outfile", str(files[kind])], check=True, env=env,
                           capture_output=True)
    if not files["q4_0"].exists():
        # --pure: every tensor q4_0, the tied embedding (GPT-2's LM head) too, as our int4 does;
        # by default llama-quantize keeps it at Q6_K.
        subprocess.run([str(BIN / "llama-quantize"), "--pure", str(files["f32"]), str(files["q4_0"]), "q4_0"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return files


def bench(model: Path, *, threads: int, new_tokens: int = 0, prompt: int = 0, depth: int = 0) -> float:
    """Tokens per second of one ``llama-bench`` run: decode (``-n``) or prompt processing (``-p``),
    after ``depth`` tokens already in the cache (``-d``, not timed)."""
    command = [str(BIN / "llama-bench"), "-m", str(model), "-t", str(threads), "-r", "1", "-o", "json",
               "-p", str(prompt), "-n", str(new_tokens)] + (["-d", str(depth)] if depth else [])
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return float(json.loads(result.stdout)[0]["avg_ts"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("build", "convert"))
    parser.add_argument("checkpoint", nargs="?", type=Path)
    args = parser.parse_args()
    build()
    if args.step == "convert":
        if args.checkpoint is None:
            parser.error("convert needs a checkpoint folder")
        for kind, path in convert(args.checkpoint).items():
            print(f"{kind:5} {path} ({path.stat().st_size / 1e6:.0f} MB)")
    print(commit())


if __name__ == "__main__":
    main()
