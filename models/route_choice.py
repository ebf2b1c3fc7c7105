"""Which kernel runs a one-row product, measured on the user's machine the first time a shape is
seen, never assumed from another machine.

A decoding step streams every weight from memory once, and which kernel streams fastest differs
from CPU to CPU (AVX-512 or AVX2 code, oneDNN or PyTorch's own): so each candidate is timed on
weights of the real shape and dtype, enough copies of them to spill the last-level cache (as the
model's weights do), a few interleaved rounds, and the candidates' order, fastest first, is kept
for the process and in a small file beside the native builds (``choices-<hash>.json``, named by
the CPU, torch's version, the kernels' source and the thread count), so that later processes on
the machine skip the timing. It costs tens to hundreds of milliseconds once per shape; delete the file to measure
again. ``GPT_HUB_KERNEL=<name>`` forces one where it exists (a
name that is no candidate for a shape is logged, once, and the fastest measured instead). A
candidate that raises while measured is left out (and logged); fewer copies are measured where
memory runs short.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from ..locks import ForkSafeLock
from .memory import available_memory

logger = logging.getLogger(__name__)

Product = Callable[[Tensor], Tensor]
ROUNDS = 3
# A candidate that makes a copy of its weight (another layout, kept for the model's life) is ranked
# as if this much slower: the memory is taken only for a clear gain, not for a tie within noise.
COPY_MARGIN = 1.10
_METHOD = f"float32 -rows; copies x{COPY_MARGIN}; 2 LLC to 1 GB".encode()  # in the choices file's name: a change measures again
_chosen: dict[tuple, tuple[str, ...]] = {}  # by key: the candidates' names, fastest first
_warned: set[str] = set()  # forced names already reported as no candidate
_lock = ForkSafeLock()


def _sysfs_bytes(text: str) -> int:
    """A size as sysfs writes it (``32768K``, ``300M``) in bytes."""
    text = text.strip().upper()
    return int(text.rstrip("KMG")) << {"K": 10, "M": 20, "G": 30}.get(text[-1:], 0)


def _read(path: Path) -> str:
    return path.read_text(encoding="ascii").strip()


@functools.cache
def cache_reach(threads: int, cpus: frozenset[int], root: str = "/sys/devices/system/cpu") -> int | None:
    """Bytes of last-level cache that ``threads`` threads on ``cpus`` can fill: its size (the
    highest level sysfs lists for the first CPU), times the number of such caches those CPUs have
    (a multi-die AMD or a two-socket machine has several, each shared by some of its CPUs), at most
    one per thread; None where sysfs does not say."""
    try:
        first = Path(root, f"cpu{min(cpus)}", "cache")
        levels = {int(_read(index / "level")): index.name for index in first.glob("index*")
                  if _read(index / "type") in ("Unified", "Data")}
        last = levels[max(levels)]
        size = _sysfs_bytes(_read(first / last / "size"))
        caches = {_read(Path(root, f"cpu{cpu}", "cache", last, "shared_cpu_list")) for cpu in cpus}
    except (OSError, ValueError, KeyError):
        return None
    return size * min(len(caches), max(threads, 1))


def _machine() -> tuple[int | None, int | None]:
    """The last-level cache this process's threads reach and the memory it may still take, in
    bytes (None where unknown)."""
    cpus = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else frozenset({0})
    return cache_reach(torch.get_num_threads(), cpus), available_memory()


def stream_bytes(cache: int | None, available: int | None) -> int:
    """How many bytes of weights to time a candidate on: twice the last-level cache the threads
    reach (32 MB assumed where unknown), so that they stream from memory as a model's weights do,
    even past a Xeon's 300 MB cache; at least 16 MB, at most 1 GB and an eighth of the memory this
    process may still take (the copies, and the transposed or packed copies candidates make)."""
    size = 2 * (cache or 32 << 20)
    if available is not None:
        size = min(size, available // 8)
    return max(16 << 20, min(size, 1 << 30))


def copy_count(weight_bytes: int, stream: int) -> int:
    """How many weights to time: enough to stream ``stream`` bytes, at most 512; at most 8 for
    weights under 64 KB (a toy model's), whose products cost their calls, not their reads."""
    enough = min(512, math.ceil(stream / max(weight_bytes, 1)))
    return min(enough, 8) if weight_bytes < 64 << 10 else enough


def _record() -> Path:
    """The file of this machine's choices (see the module's docstring)."""
    from .native import build  # the builds' folder, the CPU and the source name the file

    digest = hashlib.sha256()
    for part in (build.cpu_identity(), torch.__version__, str(torch.get_num_threads())):
        digest.update(hashlib.sha256(part.encode()).digest())
    digest.update(build.source_digest())
    digest.update(_METHOD)
    return build.native_dir() / f"choices-{digest.hexdigest()[:16]}.json"


def _recorded(path: Path) -> dict[str, str]:
    """The choices kept in ``path`` (each the names, fastest first, joined by spaces); none where
    it is missing, unreadable or not ours."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(found, dict):
        return {}
    return {k: v for k, v in found.items() if isinstance(k, str) and isinstance(v, str)}


def _keep(path: Path, name: str, choice: str) -> None:
    """Add one choice to ``path`` (atomically; a folder that cannot be written is no error)."""
    from ..download.atomic import atomic_write

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps({**_recorded(path), name: choice}, indent=1, sort_keys=True).encode())
    except OSError as error:
        logger.debug("the kernel choice for %s is not kept in %s: %s", name, path, error)


def _seconds(products: list[Product], x: Tensor) -> float:
    start = time.perf_counter()
    for product in products:
        product(x)
    return time.perf_counter() - start


def ranking(key: tuple, build: Callable[[], dict[str, Product]], weight_bytes: int,
            x: Tensor | Callable[[], Tensor], copying: frozenset[str] = frozenset(),
            streamed: bool = True) -> tuple[str, ...]:
    """The candidates' names for ``key``, fastest first: ``build()`` gives the candidates'
    products over one new weight of the key's shape (a candidate that cannot run is left out),
    ``x`` is a row to feed them (or makes one: only a measurement needs it); those named in
    ``copying`` keep a copy of the weight, and rank ``COPY_MARGIN`` slower than they measure.
    Products bound by arithmetic, not by reading the weight (many rows: not ``streamed``), are
    timed on the one weight, in cache.
    Measured once per key and process, one measurement at a time. A forced kernel
    (``GPT_HUB_KERNEL``) is the only name."""
    key = (*key, torch.get_num_threads())  # the fastest for two threads need not be for sixteen
    found = _chosen.get(key)
    if found is not None:
        return found
    with _lock:
        if key in _chosen:
            return _chosen[key]
        forced = os.environ.get("GPT_HUB_KERNEL")
        record, recorded_as = _record(), " ".join(map(str, key))
        kept = None if forced else _recorded(record).get(recorded_as)
        if kept:  # names that cannot run here any more leave their caller PyTorch's route
            _chosen[key] = tuple(kept.split())
            return _chosen[key]
        # The copies are made as the model's weights were, outside inference mode: made inside
        # it, they would get no packed or transposed copies, and the routes timed would not be
        # the ones that run.
        with torch.inference_mode(False):
            first = build()
        names = list(first)
        if forced and forced not in names and forced not in _warned:
            _warned.add(forced)
            logger.warning("GPT_HUB_KERNEL=%r is not a kernel for %s here (%s): the fastest is measured instead",
                           forced, key, ", ".join(names))
        if forced in names or len(names) == 1:
            _chosen[key] = (forced if forced in names else names[0],)
            return _chosen[key]
        copies = [first]
        for _ in range(copy_count(weight_bytes, stream_bytes(*_machine())) - 1 if streamed else 0):
            try:
                with torch.inference_mode(False):
                    copies.append(build())
            except Exception as error:  # memory runs short: measure on the copies there are
                logger.debug("measuring %s on %d copies: %s", key, len(copies), error)
                break
        x = x() if callable(x) else x
        failed: dict[str, Exception] = {}
        with torch.no_grad():
            best = {name: math.inf for name in names}
            for _ in range(ROUNDS + 1):  # the first round warms up (and is kept only if faster)
                for name in names:
                    if name in failed:
                        continue
                    try:
                        best[name] = min(best[name], _seconds([c[name] for c in copies], x))
                    except Exception as error:  # a candidate that cannot run here is no choice
                        failed[name] = error
                        logger.warning("kernel %s failed when measured for %s and is left out: %r", name, key, error)
        usable = [name for name in names if name not in failed]
        if not usable:
            raise failed[names[0]]
        _chosen[key] = tuple(sorted(usable, key=lambda name: best[name] * (COPY_MARGIN if name in copying else 1.0)))
        _keep(record, recorded_as, " ".join(_chosen[key]))
        logger.debug("kernels for %s, fastest first: %s (%s)", key, _chosen[key],
                     ", ".join(f"{name} {seconds * 1e3:.2f} ms" for name, seconds in best.items()))
        return _chosen[key]


def first_built(names: tuple[str, ...], make: Callable[[str], Product | None]) -> Product | None:
    """The product of the first of ``names`` (fastest first) that ``make`` can build here, or None:
    a ranking's first may not build for every weight (one made under inference mode keeps no
    copies), and then the next runs, not PyTorch's route."""
    return next((found for found in map(make, names) if found is not None), None)


def fastest_native(names: tuple[str, ...], make: Callable[[str], Product | None]) -> Product | None:
    """The product of the first of ``names`` (fastest first) that is not PyTorch's route and that
    ``make`` can build here, or None."""
    return first_built(names, lambda name: None if name == "torch" else make(name))


def chosen() -> dict[tuple, str]:
    """The fastest kernel of each key measured so far in this process (for benchmarks and tests)."""
    with _lock:
        return {key: names[0] for key, names in _chosen.items()}
