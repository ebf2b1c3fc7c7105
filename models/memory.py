"""How much memory this process has and may still take; refusing a model too large for it
before anything is allocated."""

from __future__ import annotations

import os

import torch

from .config_base import ConfigError


# A container's memory limit and what its processes use now: cgroup v2, then v1.
CGROUP_LIMITS = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def _first_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):  # absent, unreadable, or "max": no number
        return None


def available_memory(meminfo: str = "/proc/meminfo", cgroups=CGROUP_LIMITS) -> int | None:
    """Bytes this process may still take: what the system has available (``MemAvailable``), or
    less where a container's memory limit leaves less (``MemAvailable`` is the host's, and going
    past the limit kills the process, not an allocation); None where neither is known."""
    room = []
    try:
        with open(meminfo, encoding="ascii") as f:
            line = next(line for line in f if line.startswith("MemAvailable:"))
        room.append(int(line.split()[1]) << 10)  # in kB
    except (OSError, ValueError, StopIteration, IndexError):
        pass
    for limit_path, usage_path in cgroups:
        limit, usage = _first_int(limit_path), _first_int(usage_path)
        if limit is not None and usage is not None and limit < 1 << 60:  # v1 writes "no limit" as about 2**63
            room.append(max(limit - usage, 0))
    return min(room) if room else None


def memory_size(cgroups=CGROUP_LIMITS) -> int | None:
    """Bytes of memory this process can ever have: the machine's, or a container's limit where
    that is less; None where neither is known."""
    sizes = [limit for limit in (_first_int(limit_path) for limit_path, _ in cgroups)
             if limit is not None and limit < 1 << 60]
    try:
        sizes.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    return min(sizes) if sizes else None


def check_fits_in_memory(config, dtype: torch.dtype, cgroups=CGROUP_LIMITS) -> None:
    """Refuse, naming the field, a config whose weights alone exceed the memory this process can
    have (in a container, past its limit the process would be killed while allocating)."""
    sizes = config.parameter_sizes()
    need = sum(sizes.values()) * dtype.itemsize
    have = memory_size(cgroups)
    if have is not None and need > have:
        field = max(sizes, key=sizes.get)
        raise ConfigError(
            f"{type(config).__name__}.{field}={getattr(config, field)} makes the weights need "
            f"{need / 2**30:.1f} GiB, more than the {have / 2**30:.1f} GiB of memory this process can have"
        )
