"""The repository as torch.hub loads it (its private package), for the benchmark scripts."""

from __future__ import annotations

import importlib
import importlib.util
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_scratch: list[tempfile.TemporaryDirectory] = []


def scratch_dir() -> Path:
    """A new temporary folder, removed when the benchmark's process exits: the checkpoints and
    GGUF files the benchmarks write are about a gigabyte a run."""
    folder = tempfile.TemporaryDirectory(prefix="gpt-hub-bench-")
    _scratch.append(folder)
    return Path(folder.name)


def repo_module(name: str, root: Path = REPO):
    """A module of this repository (or of another checkout of it, at ``root``) by its path inside
    it (``models``, ``models.kernels``). Each checkout gets its own private package, so two can be
    loaded side by side in one process."""
    spec = importlib.util.spec_from_file_location("hubconf", Path(root) / "hubconf.py")
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    return importlib.import_module(f"{hub._PACKAGE}.{name}")


def machine() -> str:
    """The CPU model and the vector features kernel choices depend on, for a benchmark's first line."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        import platform

        model = platform.processor() or model
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")
    import os

    import torch

    features = " ".join(flag for flag in wanted if flag in flags) or "none of AVX2/AVX-512/AMX seen"
    return (f"CPU: {model} ({features}); {os.cpu_count()} cores, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads")
