"""Pages of memory: weights in 2 MB pages, and giving back the pages of a memory-mapped file that
were read and will not be read again.

Decoding streams every weight from memory at each token. Through 4 KB pages that is a TLB miss
every 4 KB, each a page-table walk (under virtualisation, a walk of two tables); through 2 MB
pages, one per 2 MB. ``empty_in_huge_pages`` gives a large weight a private anonymous map of its
own, advised into transparent huge pages (``MADV_HUGEPAGE``; the kernel falls back to 4 KB pages
where it has no 2 MB ones free). Where the system gives none (not Linux, or turned off:
``HUGE_PAGES``), weights get ``torch.empty``'s memory. Measured on a 2-core AMD EPYC virtual
machine, GPT-2 small decodes 3-18% faster with its weights so (docs/performance.md).

Converting a mapped checkpoint to another dtype reads every page of the map once; without this,
those pages stay resident until the map is closed, and the peak is the file plus the converted
copy. ``madvise(MADV_DONTNEED)`` drops this process's pages of the range (a file-backed page is
read again from the page cache if it is ever touched). It changes nothing but this process's own
mapping. Where it is not available, nothing is released: the peak is higher, the result the same.
"""

from __future__ import annotations

import ctypes
import math
import mmap
import sys

import torch
from torch import Tensor

_MADV_DONTNEED = 4  # Linux
HUGE_PAGE = 2 * 1024 * 1024  # x86-64's transparent huge page


def _huge_pages_on() -> bool:
    """Whether this system gives transparent huge pages to a map that asks (Linux, not ``never``)."""
    if not (sys.platform.startswith("linux") and hasattr(mmap, "MADV_HUGEPAGE")):
        return False
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="ascii") as f:
            return "[never]" not in f.read()
    except OSError:  # a kernel built without them
        return False


HUGE_PAGES = _huge_pages_on()
_libc = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    except (OSError, AttributeError):
        _libc = None


def release_pages(mapped: Tensor) -> None:
    """Give back the whole pages inside ``mapped``'s bytes (a contiguous view of a map that will
    not be read again; pages shared with its neighbours are kept)."""
    if _libc is None or not mapped.numel():
        return
    start = mapped.data_ptr()
    end = start + mapped.numel() * mapped.element_size()
    first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
    last = end // mmap.PAGESIZE * mmap.PAGESIZE
    if last > first:
        _libc.madvise(first, last - first, _MADV_DONTNEED)


def empty_in_huge_pages(shape: tuple[int, ...] | torch.Size, dtype: torch.dtype) -> Tensor:
    """An uninitialised CPU tensor for a weight, which decoding reads whole at every step. One of
    at least 2 MB starts a map of its own, on a 2 MB boundary, its
    whole 2 MB pages advised into huge pages (the tail, if any, in 4 KB pages: advising it would
    round it up to 2 MB of memory); its storage is exactly its bytes and holds the map.
    ``torch.empty`` where the system gives no huge pages (``HUGE_PAGES``), or no map can be had."""
    nbytes = math.prod(shape) * dtype.itemsize
    if not HUGE_PAGES or nbytes < HUGE_PAGE:
        return torch.empty(shape, dtype=dtype)
    try:
        region = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except OSError:  # no address space left, or the process's count of maps at its limit
        return torch.empty(shape, dtype=dtype)
    start = -ctypes.addressof(ctypes.c_char.from_buffer(region)) % HUGE_PAGE  # to the next 2 MB boundary
    try:
        region.madvise(mmap.MADV_HUGEPAGE, start, nbytes // HUGE_PAGE * HUGE_PAGE)
    except OSError:  # a kernel without transparent huge pages: 4 KB pages, the same values
        pass
    return torch.frombuffer(memoryview(region)[start:start + nbytes], dtype=torch.uint8).view(dtype).view(shape)


def copy_in_huge_pages(source: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """A contiguous copy of ``source`` (converted to ``dtype``, if given) in ``empty_in_huge_pages``'s
    memory; a copy on its own device for a source that is not on the CPU."""
    if not source.is_cpu:
        return source.to(dtype=dtype or source.dtype, memory_format=torch.contiguous_format, copy=True)
    return empty_in_huge_pages(source.shape, dtype or source.dtype).copy_(source)
