"""Compiling ``decode.c`` on the user's machine, once, and loading it.

The kernels are compiled with ``-march=native`` by the system's C compiler (``$CC``, else ``cc``,
``gcc`` or ``clang``) the first time they are wanted, into ``<torch hub dir>/gpt_hub/native``
(or ``$GPT_HUB_NATIVE_DIR``),
under a name that hashes the source, the flags, the compiler's version and the CPU's model and
features: a cache shared between machines (a network home) never hands one CPU another's code.
The file is written atomically; a file that does not load is rebuilt once.

Two builds: ``wide`` (AVX-512 where the CPU has it) and ``narrow`` (AVX2 at most, which some
CPUs run faster: AMD's Zen 4 executes 512-bit operations in two halves). models/route_choice.py
times both against PyTorch's own kernels and keeps the fastest.

Where no compiler works (or ``GPT_HUB_NATIVE=0``), ``library`` returns None and every product
takes PyTorch's kernels; the reason is logged once. Linking with ``-fopenmp`` names
``libgomp.so.1``, which the dynamic loader resolves to the copy torch has already loaded: the
kernels run on torch's OpenMP threads, not on a second pool.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import threading
from pathlib import Path

from ...download.atomic import atomic_path
from ...download.cache import default_cache_dir

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("decode.c")
BASE_FLAGS = ("-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-std=gnu11")
VARIANTS = {"wide": (), "narrow": ("-mno-avx512f",)}
COMPILE_TIMEOUT_S = 180

_loaded: dict[tuple[str, ...], ctypes.CDLL | None] = {}
_lock = threading.Lock()


def enabled() -> bool:
    """Whether the native kernels may be used (``GPT_HUB_NATIVE=0`` turns them off)."""
    return os.environ.get("GPT_HUB_NATIVE", "1") != "0"


def compiler() -> str | None:
    """The C compiler to use: ``$CC``, else the first of cc, gcc, clang on the PATH."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name.split()[0]):
            return name
    return None


def _cpu_identity() -> str:
    """The CPU's model and feature flags (what -march=native compiles for)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [line for line in f if line.startswith(("model name", "flags", "Features"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


def _compiler_version(cc: str) -> str:
    result = subprocess.run([*cc.split(), "--version"], capture_output=True, text=True, timeout=30)
    return result.stdout


def library_path(flags: tuple[str, ...], cc: str, folder: Path) -> Path:
    """Where the build of ``SOURCE`` with ``flags`` by ``cc`` on this CPU is kept."""
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(flags).encode(), _compiler_version(cc).encode(),
                 _cpu_identity().encode()):
        digest.update(hashlib.sha256(part).digest())
    return folder / f"decode-{digest.hexdigest()[:20]}.so"


def native_dir() -> Path:
    """``$GPT_HUB_NATIVE_DIR``, else ``<torch hub dir>/gpt_hub/native``."""
    return Path(os.environ.get("GPT_HUB_NATIVE_DIR") or default_cache_dir() / "native")


def _compile(cc: str, flags: tuple[str, ...], target: Path) -> None:
    """Compile into a temporary file beside ``target`` and rename it there when whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        result = subprocess.run([*cc.split(), *flags, str(SOURCE), "-o", tmp], capture_output=True, text=True,
                                timeout=COMPILE_TIMEOUT_S)
        if result.returncode != 0:
            raise OSError(f"{cc} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")


def load(flags: tuple[str, ...], folder: Path | None = None) -> ctypes.CDLL:
    """The kernels built with ``flags`` (compiled first if need be); raises OSError if they cannot be."""
    cc = compiler()
    if cc is None:
        raise OSError("no C compiler found ($CC, cc, gcc or clang)")
    path = library_path(flags, cc, Path(folder) if folder is not None else native_dir())
    if not path.exists():
        _compile(cc, flags, path)
    try:
        return ctypes.CDLL(str(path))
    except OSError as error:  # a damaged file: build it again, once
        logger.warning("rebuilding %s, which did not load: %s", path, error)
        _compile(cc, flags, path)
        return ctypes.CDLL(str(path))


def library(variant: str) -> ctypes.CDLL | None:
    """The ``wide`` or ``narrow`` build for this process, or None where it cannot be had."""
    flags = BASE_FLAGS + VARIANTS[variant]
    if not enabled():
        return None
    with _lock:
        if flags not in _loaded:
            try:
                _loaded[flags] = load(flags)
            except (OSError, subprocess.SubprocessError) as error:
                logger.info("native kernels (%s) unavailable, PyTorch's kernels will be used: %s", variant, error)
                _loaded[flags] = None
        return _loaded[flags]
