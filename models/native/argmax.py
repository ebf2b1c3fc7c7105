"""Greedy decoding's choice, ``logits.argmax(-1)`` for one row, natively (decoder.c's ``argmax_row``):
PyTorch's reduction takes about 45 µs over GPT-2's 50257 logits, more after a step's weights have
streamed through the caches; the C takes a few. It answers as ``torch.argmax`` does (the first of
equal values, the first NaN where there is one), for float32 and bfloat16 logits alike (widening
bfloat16 to float32 changes no order)."""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from .build import either_library
from .products import ACTIVATIONS, _readable


def _function():
    """decoder.c's ``argmax_row`` from whichever build can be had, or None."""
    lib = either_library()
    if lib is None:
        return None
    fn = lib.argmax_row
    if fn.argtypes is None:  # values, n, act
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int]
        fn.restype = ctypes.c_int64
    return fn


def argmax(logits: Tensor) -> Tensor | None:
    """``logits.argmax(-1)`` for a contiguous CPU float32 or bfloat16 ``[1, V]`` tensor (``[1]``,
    int64); None for any other, or where no build can be had."""
    if (logits.dim() != 2 or logits.size(0) != 1 or logits.size(1) == 0 or logits.dtype not in ACTIVATIONS
            or logits.requires_grad or not _readable(logits)):
        return None
    fn = _function()
    if fn is None:
        return None
    return torch.tensor([fn(logits.data_ptr(), logits.size(1), ACTIVATIONS[logits.dtype])])
