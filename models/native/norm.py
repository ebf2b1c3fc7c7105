"""The final LayerNorm of a decoding step, for one row through block.c's ``layer_norm_row``.

generate's greedy steps run the final norm inside their one native call (decoder.py's
``NativeGreedy``); so that every step computes the same logits as the others, and as the modules'
one-token forward, every bound final norm of one row runs this same C function, from the same
build (``narrow``, else ``wide``: its sums vectorise per build, and so round per build).
"""

from __future__ import annotations

import ctypes
import torch
from torch import Tensor, nn

from .block import _memory, _vector, check_memory
from .build import either_library
from .products import ACTIVATIONS, _readable

_POINTER = ctypes.c_void_p


def _function():
    """``layer_norm_row`` of the one build every final norm takes, or None."""
    lib = either_library()
    if lib is None:
        return None
    fn = lib.layer_norm_row
    if fn.argtypes is None:  # x, weight, bias, eps, y, n, act
        fn.argtypes = [_POINTER] * 3 + [ctypes.c_float, _POINTER, ctypes.c_int64, ctypes.c_int]
        fn.restype = None
    return fn


class NativeNorm:
    """A LayerNorm's forward, its parameters bound: one row of its width and dtype on CPU, with no
    gradient to keep, through ``layer_norm_row``; anything else through ``F.layer_norm``.
    ``function`` (the C function's address), ``operands`` (weight, bias) and ``eps`` are what
    decoder.py hands C."""

    def __init__(self, fn, python, weight: Tensor, bias: Tensor, eps: float):
        self.fn, self.function, self.python = fn, ctypes.cast(fn, ctypes.c_void_p).value, python
        self.operands, self.eps, self.dtype, self.width = (weight, bias), eps, weight.dtype, weight.numel()
        self.memory = [_memory(t) for t in self.operands]  # checked before each call

    def __call__(self, x: Tensor) -> Tensor:
        if (x.dtype != self.dtype or not x.is_cpu or x.numel() != self.width or x.size(-1) != self.width
                or (x.requires_grad and torch.is_grad_enabled())):
            return self.python(x)
        check_memory(self.memory, "final norm")
        x = x.contiguous()
        if not _readable(x):
            return self.python(x)  # no memory behind it: PyTorch says so
        y = torch.empty_like(x)
        weight, bias = self.operands
        self.fn(x.data_ptr(), weight.data_ptr(), bias.data_ptr(), self.eps, y.data_ptr(), self.width,
                ACTIVATIONS[self.dtype])
        return y


def native_norm(norm: nn.LayerNorm, python):
    """A ``NativeNorm`` of ``norm`` (``python``, its forward with its parameters bound, for what
    C does not take) where a build can be had and the parameters are contiguous CPU vectors of a
    dtype the kernels take; else ``python`` itself."""
    weight = norm.weight
    if len(norm.normalized_shape) != 1 or weight is None or weight.dtype not in ACTIVATIONS:
        return python
    width, dtype = norm.normalized_shape[0], weight.dtype
    vectors = _vector(weight, width, dtype), _vector(norm.bias, width, dtype)
    if any(v is None for v in vectors):  # checked first: a model on a GPU compiles nothing
        return python
    fn = _function()
    return python if fn is None else NativeNorm(fn, python, *vectors, float(norm.eps))
