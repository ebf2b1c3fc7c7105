"""The native kernels (decode.c) as products ``x -> x @ W.T + b`` for one row of activations.

Each maker checks the weight once (dtype, shape, contiguity: the C code trusts them) and returns
a product that checks each input's dtype, contiguity and size before handing pointers to C, and
keeps the tensors it points into alive. The layouts the quantized kernels read are made here
too (``int8_scales``, ``int4_blocks``).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import torch
from torch import Tensor

from ...errors import GPTHubError, InvalidArgumentError
from .build import library

Product = Callable[[Tensor], Tensor]
ACTIVATIONS = {torch.float32: 0, torch.bfloat16: 1}
_POINTER, _SIZE, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int


class NativeKernelError(GPTHubError, MemoryError):
    """A native kernel could not allocate its scratch memory."""


def _function(variant: str, name: str):
    """The C function ``name`` of a build, its argument types declared, or None."""
    lib = library(variant)
    if lib is None:
        return None
    fn = getattr(lib, name)
    if fn.argtypes is None:
        extra = [_SIZE] if name == "gemv_int4" else []
        fn.argtypes = [_POINTER] * 5 + [_SIZE, _SIZE] + extra + [_INT, _INT]  # x, w, scale, bias, y, in, out
        fn.restype = _INT
    return fn


def available(variant: str) -> bool:
    """Whether the ``wide`` or ``narrow`` build can be had (it is compiled here on first ask)."""
    return library(variant) is not None


def _pointer(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _product(fn, weight: Tensor, scale: Tensor | None, bias: Tensor | None, in_features: int,
             out_features: int, dtype: torch.dtype, group: int | None = None) -> Product:
    act = ACTIVATIONS[dtype]
    extra = () if group is None else (group,)
    if bias is not None and (bias.dtype != dtype or not bias.is_contiguous() or bias.numel() != out_features):
        raise InvalidArgumentError("bias must be contiguous, of the activations' dtype and one value per output")
    operands = [t for t in (weight, scale, bias) if t is not None]
    sizes = [(t, t.numel(), t.dtype) for t in operands]

    def product(x: Tensor) -> Tensor:
        if x.dtype != dtype or x.numel() != in_features or not x.is_cpu:
            raise InvalidArgumentError(f"a native product takes one {dtype} CPU row of {in_features} values, got "
                             f"{tuple(x.shape)} {x.dtype}")
        # The pointers are read on each call, and the sizes checked: ``param.data = ...`` may
        # have given an operand other memory since the product was made.
        for t, numel, kind in sizes:
            if t.numel() != numel or t.dtype != kind or not t.is_contiguous():
                raise InvalidArgumentError("a native product's weight changed shape, dtype or layout since it was made")
        x = x.contiguous()
        y = torch.empty(x.shape[:-1] + (out_features,), dtype=dtype)
        status = fn(x.data_ptr(), weight.data_ptr(), _pointer(scale), _pointer(bias), y.data_ptr(), in_features,
                    out_features, *extra, act, torch.get_num_threads())
        if status != 0:
            raise NativeKernelError(f"a native {tuple(weight.shape)} product could not allocate its scratch memory")
        return y

    return product


def _check(weight: Tensor, dtypes: tuple[torch.dtype, ...]) -> None:
    if weight.dtype not in dtypes or weight.dim() != 2 or not weight.is_contiguous() or not weight.is_cpu:
        raise InvalidArgumentError(f"a native kernel takes a contiguous 2-D CPU weight of {dtypes}, got "
                         f"{tuple(weight.shape)} {weight.dtype}")


def float_product(variant: str, weight: Tensor, bias: Tensor | None, stored_in_out: bool) -> Product | None:
    """``x @ W + b`` for a float32 or bfloat16 weight ``[in, out]`` (``stored_in_out``) or
    ``[out, in]``, activations of its dtype; None where the build is missing."""
    _check(weight, (torch.float32, torch.bfloat16))
    kind = "cols" if stored_in_out else "rows"
    fn = _function(variant, f"gemv_{kind}_{'f32' if weight.dtype == torch.float32 else 'bf16'}")
    if fn is None:
        return None
    in_features, out_features = weight.shape if stored_in_out else weight.shape[::-1]
    return _product(fn, weight, None, bias, in_features, out_features, weight.dtype)


def int8_product(variant: str, q: Tensor, scales: Tensor, bias: Tensor | None, dtype: torch.dtype) -> Product | None:
    """``x @ (q * scales[:, None]).T + b`` for int8 ``q`` ``[out, in]`` and float32 ``scales``
    ``[out]`` (``int8_scales``); None where the build is missing."""
    _check(q, (torch.int8,))
    fn = _function(variant, "gemv_int8")
    if fn is None:
        return None
    if scales.dtype != torch.float32 or scales.numel() != q.size(0) or not scales.is_contiguous():
        raise InvalidArgumentError("int8 scales must be contiguous float32, one per output")
    return _product(fn, q, scales, bias, q.size(1), q.size(0), dtype)


def int4_product(variant: str, blocks: Tensor, scales: Tensor, group: int, bias: Tensor | None,
                 dtype: torch.dtype) -> Product | None:
    """The int4 product on ``int4_blocks``' layout; None where the build is missing."""
    _check(blocks, (torch.uint8,))
    fn = _function(variant, "gemv_int4")
    if fn is None:
        return None
    out_features, in_features = blocks.size(0), blocks.size(1) * 2
    if in_features % 128 or group % 32 or in_features % group:
        raise InvalidArgumentError(f"the native int4 kernel takes inputs in multiples of 128 and groups of 32k, got "
                         f"{in_features} inputs in groups of {group}")
    if scales.dtype != torch.float32 or scales.numel() != out_features * (in_features // group) + 4:
        raise InvalidArgumentError("int4 scales must be float32, one per output and group, and 4 more")
    return _product(fn, blocks, scales, bias, in_features, out_features, dtype, group)


def int8_scales(scales: Tensor) -> Tensor:
    """The int8 kernel's scales: float32, contiguous."""
    return scales.float().contiguous()


def int4_blocks(q: Tensor, scales: Tensor) -> tuple[Tensor, Tensor]:
    """int4 values ``q`` ``[out, in]`` in ``[-8, 7]`` and scales ``[out, in / group]`` in the
    kernel's layout: per 32 inputs, 16 bytes, byte j holding input j (low nibble) and j + 16
    (high), each as q + 8; the scales as float32 with 4 more (the kernel may read past a row)."""
    unsigned = (q.to(torch.int16) + 8).to(torch.uint8).view(q.size(0), -1, 32)  # [out, in / 32, 32]
    blocks = (unsigned[..., :16] | (unsigned[..., 16:] << 4)).reshape(q.size(0), -1)  # [out, in / 2]
    return blocks.contiguous(), torch.cat((scales.float().reshape(-1), torch.zeros(4)))
