"""Compiling the native kernels (``decode.c``, ``block.c``, ``decoder.c``) on the user's machine once, and loading them.

The kernels are compiled with ``-march=native`` by the system's C compiler (``$CC``, else ``cc``,
``gcc`` or ``clang``) the first time they are wanted, into ``<torch hub dir>/gpt_hub/native``
(or ``$GPT_HUB_NATIVE_DIR``),
under a name that hashes the source, the flags, the compiler's version and the CPU's model and
features: a cache shared between machines (a network home) never hands one CPU another's code.
The file is written atomically, and only once it has loaded here (a build that will not load,
from a ``$CC`` with flags that do not fit this process, never enters the cache); a file that is
cut short (a copy interrupted, a damaged disk) is refused before the loader maps it (mapping it
would kill the process), and a file that does not load is rebuilt once. A compiler that runs past
``COMPILE_TIMEOUT_S`` is killed with every process it started, and not tried again in this
process; temporary files that a killed process left behind are removed by the next build.

Two builds: ``wide`` (AVX-512) and ``narrow`` (AVX2 at most, which some CPUs run faster: AMD's
Zen 4 executes 512-bit operations in two halves). models/route_choice.py times both against
PyTorch's own kernels and keeps the fastest. On a CPU without AVX-512 (where /proc/cpuinfo says
so) only ``narrow`` is built: ``wide`` would be the same code, timed twice for nothing.

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
import re
import shlex
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path

from ...locks import ForkSafeLock
from ...download.atomic import atomic_path
from ...download.cache import default_cache_dir

logger = logging.getLogger(__name__)

FOLDER = Path(__file__).parent
SOURCES = ("decode.c", "block.c", "decoder.c")  # compiled together into one library
HEADERS = ("values.h", "block.h")
# -fno-sanitize=all: a $CC of "gcc -fsanitize=address" would build a library whose sanitizer
# runtime aborts the process that loads it. -fno-trapping-math: without it GCC keeps loops with a
# float comparison in a select (block.c's exp, a clamp) scalar on AVX2; no value changes, only
# floating-point exception flags, which nothing here reads. -Wl,-Bsymbolic: the files' calls to
# each other's functions (block_step, layer_norm_row...) bind to these, not to a function of the same
# name that a library loaded earlier with RTLD_GLOBAL exports.
BASE_FLAGS = ("-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-std=gnu11", "-fno-sanitize=all",
              "-fno-trapping-math", "-Wl,-Bsymbolic")
VARIANTS = {"wide": (), "narrow": ("-mno-avx512f",)}
COMPILE_TIMEOUT_S = 180
VERSION_TIMEOUT_S = 30
# A temporary build older than this belongs to a process that died (a build is killed sooner).
STALE_TEMPORARY_S = 2 * COMPILE_TIMEOUT_S + 60
# atomic_path's temporaries of a build or of the kernel choices (models/route_choice.py)
_TEMPORARY = re.compile(r"\.(decode-[0-9a-f]+\.so|choices-[0-9a-f]+\.json)\.[0-9]+\.[0-9a-f]+\.tmp")

_loaded: dict[tuple[str, ...], ctypes.CDLL | None] = {}
_lock = ForkSafeLock()


def enabled() -> bool:
    """Whether the native kernels may be used (``GPT_HUB_NATIVE=0`` turns them off)."""
    return os.environ.get("GPT_HUB_NATIVE", "1") != "0"


def _command(cc: str) -> list[str]:
    """``cc`` as a command line (``"ccache gcc -m64"``, ``"'/opt/my tools/gcc'"``), or [] if it
    is blank or badly quoted."""
    try:
        return shlex.split(cc)
    except ValueError:
        return []


def compiler() -> str | None:
    """The C compiler to use: ``$CC``, else the first of cc, gcc, clang on the PATH."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        command = _command(name or "")
        if command and shutil.which(command[0]):
            return name
    return None


def _cpuinfo_lines(*prefixes: str) -> list[str] | None:
    """The lines of /proc/cpuinfo that start with one of ``prefixes``, or None where it cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return [line for line in f if line.startswith(prefixes)]
    except OSError:
        return None


def cpu_identity() -> str:
    """The CPU's model and feature flags (what -march=native compiles for)."""
    lines = _cpuinfo_lines("model name", "flags", "Features")
    return platform.processor() + platform.machine() if lines is None else "".join(sorted(set(lines)))


def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags as /proc/cpuinfo lists them, or None where it cannot be read."""
    lines = _cpuinfo_lines("flags")
    return frozenset(lines[0].split(":", 1)[1].split()) if lines else None


def builds_here(variant: str) -> bool:
    """Whether ``variant`` is a build of its own on this CPU: ``wide`` only where AVX-512 may be
    present (flags that lack it make it ``narrow``'s code under another name)."""
    if variant != "wide":
        return True
    flags = cpu_flags()
    return flags is None or "avx512f" in flags


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``command`` (no input, its output kept, decoded whatever its bytes) in a process group
    of its own; if it runs past ``timeout`` (or this thread is interrupted), the whole group is
    killed: a compiler driver's children (cc1, as, ld) do not outlive it to write into the cache."""
    with subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, errors="replace", start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except BaseException:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (AttributeError, OSError):  # no process groups here, or the group is gone
                process.kill()
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _compiler_version(cc: str) -> str:
    return _run([*_command(cc), "--version"], VERSION_TIMEOUT_S).stdout


def source_digest() -> bytes:
    """A hash of the kernels' source files."""
    digest = hashlib.sha256()
    for name in SOURCES + HEADERS:
        digest.update(hashlib.sha256((FOLDER / name).read_bytes()).digest())
    return digest.digest()


def library_path(flags: tuple[str, ...], cc: str, folder: Path) -> Path:
    """Where the build of ``SOURCES`` with ``flags`` by ``cc`` (its own arguments included) on
    this CPU is kept."""
    digest = hashlib.sha256()
    for part in (source_digest(), " ".join(flags).encode(), shlex.join(_command(cc)).encode(),
                 _compiler_version(cc).encode(), cpu_identity().encode()):
        digest.update(hashlib.sha256(part).digest())
    return folder / f"decode-{digest.hexdigest()[:20]}.so"


def native_dir() -> Path:
    """``$GPT_HUB_NATIVE_DIR`` (``~`` expanded), else ``<torch hub dir>/gpt_hub/native``."""
    folder = os.environ.get("GPT_HUB_NATIVE_DIR")
    return Path(folder).expanduser() if folder else default_cache_dir() / "native"


def check_whole(path: str | os.PathLike) -> None:
    """Raise OSError if ``path`` is an ELF file cut short: the loader maps its segments, and
    touching a page past the end of a file kills the process (SIGBUS) where dlopen would have
    reported an error. Files that are not ELF are left to the loader to judge."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        ident = f.read(16)
        if ident[:4] != b"\x7fELF":
            return
        if len(ident) < 16 or ident[4] not in (1, 2) or ident[5] not in (1, 2):
            raise OSError(f"{path} is not a whole ELF file")
        wide, order = ident[4] == 2, "<" if ident[5] == 1 else ">"
        header = f.read(48 if wide else 36)
        if len(header) != (48 if wide else 36):
            raise OSError(f"{path} is cut short: its ELF header is incomplete")
        fields = struct.unpack(order + ("HHIQQQIHHHHHH" if wide else "HHIIIIIHHHHHH"), header)
        phoff, shoff, phentsize, phnum, shentsize, shnum = fields[4], fields[5], *fields[8:12]
        segment = order + ("IIQQQQQQ" if wide else "IIIIIIII")
        if phentsize < struct.calcsize(segment) and phnum:
            raise OSError(f"{path} is not a whole ELF file: its program headers are malformed")
        spans = [(phoff, phentsize * phnum), (shoff if shnum else 0, shentsize * shnum)]
        if phoff + phentsize * phnum <= size:
            for i in range(phnum):
                f.seek(phoff + i * phentsize)
                entry = struct.unpack(segment, f.read(struct.calcsize(segment)))
                offset, filesz = (entry[2], entry[5]) if wide else (entry[1], entry[4])
                spans.append((offset, filesz))
    for start, length in spans:
        if start + length > size:
            raise OSError(f"{path} is cut short ({size} bytes; its ELF headers reach byte {start + length})")


def _remove_stale_temporaries(folder: Path) -> None:
    """Remove the temporary builds (and choices files) that processes killed mid-write left in ``folder``."""
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if _TEMPORARY.fullmatch(entry.name):
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMPORARY_S:
                    os.unlink(entry.path)
            except OSError:
                pass


def _compile(cc: str, flags: tuple[str, ...], target: Path) -> ctypes.CDLL:
    """Compile into a temporary file beside ``target``, load it, and only then rename it there:
    a build that does not load never enters the cache."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target.parent)
    with atomic_path(target) as tmp:
        result = _run([*_command(cc), *flags, *(str(FOLDER / name) for name in SOURCES), "-o", tmp],
                      COMPILE_TIMEOUT_S)
        if result.returncode != 0:
            raise OSError(f"{cc} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
        check_whole(tmp)
        lib = ctypes.CDLL(tmp)
    return lib


def load(flags: tuple[str, ...], folder: Path | None = None) -> ctypes.CDLL:
    """The kernels built with ``flags`` (compiled first if need be); raises OSError if they cannot be."""
    cc = compiler()
    if cc is None:
        raise OSError("no C compiler found ($CC, cc, gcc or clang)")
    path = library_path(flags, cc, Path(folder) if folder is not None else native_dir())
    if not path.exists():
        return _compile(cc, flags, path)
    try:
        check_whole(path)
        return ctypes.CDLL(str(path))
    except OSError as error:  # a damaged file: build it again, once
        logger.warning("rebuilding %s, which did not load: %s", path, error)
        return _compile(cc, flags, path)


def either_library() -> ctypes.CDLL | None:
    """The ``narrow`` build, else the ``wide`` one: for a function every caller must take from the
    same build (norm.py's final norm rounds per build), or that answers alike from either."""
    return library("narrow") or library("wide")


def library(variant: str) -> ctypes.CDLL | None:
    """The ``wide`` or ``narrow`` build for this process, or None where it cannot be had."""
    flags = BASE_FLAGS + VARIANTS[variant]
    if not enabled():
        return None
    with _lock:
        if flags not in _loaded and not builds_here(variant):  # decided once: callers ask on every product
            _loaded[flags] = None
        if flags not in _loaded:
            try:
                _loaded[flags] = load(flags)
            except (OSError, subprocess.SubprocessError) as error:
                logger.info("native kernels (%s) unavailable, PyTorch's kernels will be used: %s", variant, error)
                _loaded[flags] = None
                if isinstance(error, subprocess.TimeoutExpired):  # the same compiler would hang again
                    for other in VARIANTS.values():
                        _loaded.setdefault(BASE_FLAGS + other, None)
        return _loaded[flags]
