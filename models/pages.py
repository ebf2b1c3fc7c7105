"""Giving back the pages of a memory-mapped file that were read and will not be read again.

Converting a mapped checkpoint to another dtype reads every page of the map once; without this,
those pages stay resident until the map is closed, and the peak is the file plus the converted
copy. ``madvise(MADV_DONTNEED)`` drops this process's pages of the range (a file-backed page is
read again from the page cache if it is ever touched). It changes nothing but this process's own
mapping. Where it is not available, nothing is released: the peak is higher, the result the same.
"""

from __future__ import annotations

import ctypes
import mmap
import sys

from torch import Tensor

_MADV_DONTNEED = 4  # Linux
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
