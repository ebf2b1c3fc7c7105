"""The native kernels (decode.c) as products ``x -> x @ W.T + b`` for one row of activations (and
``float_product(..., several_rows=True)`` for several rows).

Each maker checks the weight once (dtype, shape, contiguity: the C code trusts them) and returns
a product that checks each input's dtype, contiguity and size before handing pointers to C, and
keeps the tensors it points into alive. On each call every operand is checked again (CPU, dtype,
size, layout, and memory behind it: ``param.data = ...`` or ``untyped_storage().resize_(0)`` may
have changed it since), and the call holds its own references to the memory it reads, since
ctypes lets other threads run meanwhile and one may swap a weight's ``.data``. The layouts the
quantized kernels read are made here too (``int8_scales``, ``int4_tiles``).
"""

from __future__ import annotations

import ctypes
import operator

import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import ArgumentTypeError, GPTHubError, InvalidArgumentError
from ..pages import copy_in_huge_pages
from .build import VARIANTS, either_library, library

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
    if fn.argtypes is None:  # x, w, scale, bias, y, in, out, group, act, threads (values.h)
        fn.argtypes = [_POINTER] * 5 + [_SIZE] * 3 + [_INT, _INT]
        fn.restype = _INT
    return fn


def available(variant: str) -> bool:
    """Whether the ``wide`` or ``narrow`` build can be had (it is compiled here on first ask)."""
    return variant in VARIANTS and library(variant) is not None  # a name from elsewhere (a file): no build


def _pointer(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _readable(t: Tensor) -> bool:
    """Whether ``t`` is a contiguous CPU tensor with memory behind every element (a storage
    resized to nothing keeps its tensors' shapes)."""
    return (t.is_cpu and t.is_contiguous()
            and t.untyped_storage().nbytes() >= t.storage_offset() * t.element_size() + t.nbytes)


class NativeProduct:
    """A native product for one row (see the module's docstring), and what models/native/block.py
    needs to call the same kernel from C: ``function`` (its address), ``operands`` (weight,
    scales, bias), ``in_features``, ``out_features``, ``group``, ``dtype`` and the build's
    ``variant``. With ``several_rows``, a product of any number of rows ``[..., in]``, whose
    kernel takes the number of rows in place of ``group`` (decode.c's ``few_*``)."""

    def __init__(self, variant: str, fn, weight: Tensor, scale: Tensor | None, bias: Tensor | None,
                 in_features: int, out_features: int, dtype: torch.dtype, group: int = 0,
                 several_rows: bool = False):
        if bias is not None and (not isinstance(bias, Tensor) or bias.dtype != dtype or not _readable(bias)
                                 or bias.numel() != out_features):
            raise InvalidArgumentError("bias must be a contiguous CPU tensor of the activations' dtype, one value "
                                       "per output")
        self.variant, self.fn, self.function = variant, fn, ctypes.cast(fn, ctypes.c_void_p).value
        self.operands = (weight, scale, bias)
        self.in_features, self.out_features, self.dtype, self.group = in_features, out_features, dtype, group
        self.several_rows = several_rows
        self._specs = [(t.numel(), t.dtype, t.element_size()) if t is not None else None for t in self.operands]

    def held(self) -> list[Tensor | None]:
        """Aliases of the operands, checked: they keep the memory they point into alive for a call.
        Another thread may run ``param.data = ...`` while C reads (ctypes releases the GIL), or may
        have done so, or resized a storage, since the product was made. ``.data`` (unlike
        ``detach()``) keeps the GIL, so it cannot meet a ``param.data = ...`` half done."""
        held = [None if t is None else t.data for t in self.operands]
        for t, spec in zip(held, self._specs):
            if t is None:
                continue
            numel, kind, itemsize = spec
            if (t.dtype != kind or t.numel() != numel or not t.is_cpu or not t.is_contiguous()
                    or t.untyped_storage().nbytes() < (t.storage_offset() + numel) * itemsize):
                raise InvalidArgumentError("a native product's weight changed shape, dtype, device or layout, or "
                                           "lost its memory, since it was made")
        return held

    def __call__(self, x: Tensor) -> Tensor:
        dtype, in_features = self.dtype, self.in_features
        shaped = isinstance(x, Tensor) and x.dim() > 0 and x.size(-1) == in_features
        rows = x.numel() // in_features if shaped and self.several_rows else 1
        if not shaped or x.dtype != dtype or not x.is_cpu or x.numel() != rows * in_features:
            raise InvalidArgumentError(f"a native product takes {'' if self.several_rows else 'one '}{dtype} CPU "
                                       f"row{'s' if self.several_rows else ''} of {in_features} values, got "
                                       f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__} "
                                       f"{getattr(x, 'dtype', '')}")
        w, s, b = self.held()
        x = x.contiguous()
        if x.untyped_storage().nbytes() < (x.storage_offset() + rows * in_features) * dtype.itemsize:
            raise InvalidArgumentError("a native product's input has no memory behind it")
        y = torch.empty(x.shape[:-1] + (self.out_features,), dtype=dtype)
        status = self.fn(x.data_ptr(), w.data_ptr(), _pointer(s), _pointer(b), y.data_ptr(), in_features,
                         self.out_features, rows if self.several_rows else self.group, ACTIVATIONS[dtype],
                         torch.get_num_threads())
        if status != 0:
            raise NativeKernelError(f"a native {tuple(w.shape)} product could not allocate its scratch memory")
        return y


def _check(weight: Tensor, dtypes: tuple[torch.dtype, ...]) -> None:
    if not isinstance(weight, Tensor):
        raise ArgumentTypeError(f"a native kernel takes a tensor weight, got {type(weight).__name__}")
    if weight.dtype not in dtypes or weight.dim() != 2 or not _readable(weight):
        raise InvalidArgumentError(f"a native kernel takes a contiguous 2-D CPU weight of {dtypes}, got "
                                   f"{tuple(weight.shape)} {weight.dtype} on {weight.device}")


def _check_scales(scales: Tensor, numel: int, what: str, dtype: torch.dtype = torch.float32) -> None:
    if not isinstance(scales, Tensor) or scales.dtype != dtype or scales.numel() != numel or not _readable(scales):
        raise InvalidArgumentError(f"{what} scales must be a contiguous {dtype} CPU tensor of {numel} values")


def float_product(variant: str, weight: Tensor, bias: Tensor | None, stored_in_out: bool,
                  several_rows: bool = False) -> NativeProduct | None:
    """``x @ W + b`` for a float32 or bfloat16 weight ``[in, out]`` (``stored_in_out``) or
    ``[out, in]``, activations of its dtype: one row (decode.c's ``gemv_*``), or with
    ``several_rows`` any number ``[..., in]``, eight rows a pass over the weight (``few_*``); None
    where the build is missing."""
    _check(weight, (torch.float32, torch.bfloat16))
    kind = "cols" if stored_in_out else "rows"
    fn = _function(variant, f"{'few' if several_rows else 'gemv'}_{kind}_{'f32' if weight.dtype == torch.float32 else 'bf16'}")
    if fn is None:
        return None
    in_features, out_features = weight.shape if stored_in_out else weight.shape[::-1]
    return NativeProduct(variant, fn, weight, None, bias, in_features, out_features, weight.dtype,
                         several_rows=several_rows)


def int8_product(variant: str, q: Tensor, scales: Tensor, bias: Tensor | None, dtype: torch.dtype,
                 several_rows: bool = False) -> NativeProduct | None:
    """``x @ (q * scales[:, None]).T + b`` for int8 ``q`` ``[out, in]`` and float32 ``scales``
    ``[out]`` (``int8_scales``): one row, or with ``several_rows`` any number, eight a pass over
    the weight (decode.c's ``few_int8``); None where the build is missing."""
    _check(q, (torch.int8,))
    fn = _function(variant, "few_int8" if several_rows else "gemv_int8")
    if fn is None:
        return None
    _check_scales(scales, q.size(0), "int8")  # one per output
    return NativeProduct(variant, fn, q, scales, bias, q.size(1), q.size(0), dtype, several_rows=several_rows)


TILE = 16  # rows of an int4 tile (decode.c)


def int4_fits(in_features: int, group: int) -> bool:
    """Whether the native int4 kernel takes ``in_features`` inputs in groups of ``group``: whole
    blocks of 32 inputs, and groups of a power of two from 32 that divide the inputs."""
    return not (in_features % 32 or group < 32 or group & (group - 1) or in_features % group)


def int4_product(variant: str, tiles: Tensor, scales: Tensor, group: int, bias: Tensor | None, dtype: torch.dtype,
                 out_features: int) -> NativeProduct | None:
    """The int4 product on ``int4_tiles``' layout, ``out_features`` outputs; None where the build
    is missing."""
    _check(tiles, (torch.uint8,))
    fn = _function(variant, "gemv_int4")
    if fn is None:
        return None
    try:
        group, out_features = operator.index(group), operator.index(out_features)
    except TypeError:
        raise ArgumentTypeError(f"the int4 group and the outputs must be ints, got {type(group).__name__} and "
                                f"{type(out_features).__name__}") from None
    in_features = tiles.size(1) // 8  # a tile's row holds 16 rows of in / 2 bytes
    if tiles.size(1) % 8 or not int4_fits(in_features, group) or not 0 < out_features <= tiles.size(0) * TILE \
            or out_features <= (tiles.size(0) - 1) * TILE:
        raise InvalidArgumentError(f"the native int4 kernel takes inputs in multiples of 32, groups of a power of two "
                                   f"from 32 and its tiles' outputs, got {in_features} inputs in groups of {group}, "
                                   f"{out_features} outputs in {tiles.size(0)} tiles")
    _check_scales(scales, tiles.size(0) * TILE * (in_features // group), "int4", torch.bfloat16)  # a row's group's
    return NativeProduct(variant, fn, tiles, scales, bias, in_features, out_features, dtype, group)


def int8_scales(scales: Tensor) -> Tensor:
    """The int8 kernel's scales: float32, contiguous."""
    return scales.float().contiguous()


def int4_tiles(q: Tensor, scales: Tensor) -> tuple[Tensor, Tensor]:
    """int4 values ``q`` ``[out, in]`` in ``[-8, 7]`` and scales ``[out, in / group]`` in the
    kernel's layout (decode.c): rows in tiles of 16 (the last padded with zeros), ``[tiles, in *
    8]`` bytes, per block of 32 inputs four chunks of 64 bytes, chunk k holding 4 bytes of each
    row, byte j with input 4k + j in its low nibble and 16 + 4k + j in its high one, each as q + 8;
    the scales ``[tiles, groups * 16]``, per group the tile's 16 rows, in bfloat16 (as the model keeps
    them, models/quantized_values.py)."""
    out, n_in = q.shape
    tiles, pad = -(-out // TILE), -out % TILE
    unsigned = F.pad((q.to(torch.int16) + 8).to(torch.uint8), (0, 0, 0, pad), value=8)  # [tiles * 16, in]
    halves = unsigned.view(tiles, TILE, n_in // 32, 2, 4, 4)  # [tile, row, block, low/high, chunk, byte]
    packed = halves[:, :, :, 0] | (halves[:, :, :, 1] << 4)  # [tile, row, block, chunk, byte]
    chunks = copy_in_huge_pages(packed.permute(0, 2, 3, 1, 4)).view(tiles, -1)  # [tile, block * chunk * row * byte]
    groups = scales.size(1)
    padded = F.pad(scales.to(torch.bfloat16), (0, 0, 0, pad))  # [tiles * 16, groups]
    return chunks, padded.view(tiles, TILE, groups).transpose(1, 2).reshape(tiles, -1).contiguous()


def int4_widened(chunks: Tensor, scales: Tensor, first: int, rows: int, group: int) -> Tensor:
    """Output rows ``first`` .. ``first + rows - 1`` (``first`` a multiple of 16) of ``int4_tiles``'
    values times their scales, ``[rows, in]`` in bfloat16, each rounded once (decode.c's
    ``int4_widen``, from either build): the weight a bfloat16 product of many rows reads
    (models/quantize.py)."""
    _check(chunks, (torch.uint8,))
    in_features = chunks.size(1) // 8
    if (chunks.size(1) % 8 or not int4_fits(in_features, group) or first % TILE or first < 0 or rows < 0
            or first + rows > chunks.size(0) * TILE):
        raise InvalidArgumentError(f"int4 tiles of {in_features} inputs in groups of {group} hold no rows "
                                   f"{first}..{first + rows - 1} (of {chunks.size(0) * TILE})")
    _check_scales(scales, chunks.size(0) * TILE * (in_features // group), "int4", torch.bfloat16)
    lib = either_library()
    if lib is None:
        raise NativeKernelError("no native build: int4's tiles cannot be widened")
    fn = lib.int4_widen
    if fn.argtypes is None:  # q, scale, w, in, first, rows, group, threads
        fn.argtypes, fn.restype = [_POINTER] * 3 + [_SIZE] * 4 + [_INT], None
    widened = torch.empty(rows, in_features, dtype=torch.bfloat16)
    fn(chunks.data_ptr(), scales.data_ptr(), widened.data_ptr(), in_features, first, rows, group,
       torch.get_num_threads())
    return widened
