"""Refuse a model too large for this machine before anything is allocated."""

from __future__ import annotations

import os

import torch

from .config_base import ConfigError


def check_fits_in_memory(config, dtype: torch.dtype) -> None:
    """Refuse, naming the field, a config whose weights alone exceed this machine's memory."""
    sizes = config.parameter_sizes()
    need = sum(sizes.values()) * dtype.itemsize
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > have:
        field = max(sizes, key=sizes.get)
        raise ConfigError(
            f"{type(config).__name__}.{field}={getattr(config, field)} makes the weights need "
            f"{need / 2**30:.1f} GiB, more than this machine's {have / 2**30:.1f} GiB of memory"
        )
