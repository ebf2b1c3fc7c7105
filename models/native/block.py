"""A whole transformer block for one new token in one native call (``block.c``), for ``generate``'s
batch-1 decoding steps.

Through PyTorch, a block's decoding step is about twenty operator calls and as many Python
calls around its four products, about a hundred microseconds a block: as much as the products
themselves take on a quantized model. ``BlockStep`` runs the block's ``functional.block`` for
everything else (prompts, batches, masks, attention weights) and ``block_step`` of block.c for one
token of one sequence over a preallocated cache, with the same one-row kernels the products would
use (the fastest native ones measured here, models/route_choice.py). Results agree with the
functional code up to float rounding; tests/test_native_block.py holds them to it.

The weights are taken as they are when the first such step runs (aliases of them are held, so
memory cannot go away under C); each call checks that none of them lost its memory since.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import torch
from torch import Tensor

from ...errors import InvalidArgumentError
from ..kv_cache import LayerCache
from .build import library
from .products import ACTIVATIONS, NativeKernelError, NativeProduct, _pointer

NONLINEARITIES = {"gelu_new": 0, "gelu_pytorch_tanh": 0, "relu": 1}  # block.c's `activation`
_POINTER, _SIZE = ctypes.c_void_p, ctypes.c_int64


class _Product(ctypes.Structure):
    _fields_ = [("fn", _POINTER), ("weight", _POINTER), ("scale", _POINTER), ("bias", _POINTER),
                ("in_features", _SIZE), ("out_features", _SIZE), ("group", _SIZE)]


class _Block(ctypes.Structure):
    _fields_ = [("qkv", _Product), ("proj", _Product), ("up", _Product), ("down", _Product),
                ("norm1_weight", _POINTER), ("norm1_bias", _POINTER), ("norm2_weight", _POINTER),
                ("norm2_bias", _POINTER), ("n_embd", _SIZE), ("n_head", _SIZE), ("inner", _SIZE),
                ("norm1_eps", ctypes.c_float), ("norm2_eps", ctypes.c_float), ("scale", ctypes.c_float),
                ("pre_norm", ctypes.c_int), ("activation", ctypes.c_int), ("act", ctypes.c_int)]


def _function(variant: str):
    """block.c's ``block_step`` of a build, or None."""
    lib = library(variant)
    if lib is None:
        return None
    fn = lib.block_step
    if fn.argtypes is None:  # block, x_in, x_out, keys, values, capacity, position, cache_act, threads
        fn.argtypes = [ctypes.POINTER(_Block)] + [_POINTER] * 4 + [_SIZE, _SIZE, ctypes.c_int, ctypes.c_int]
        fn.restype = ctypes.c_int
    return fn


def _memory(t: Tensor) -> tuple:
    """What to check before each call that ``t``'s memory is still there: its storage, the
    storage's address and the bytes ``t`` needs of it."""
    storage = t.untyped_storage()
    return storage, storage.data_ptr(), (t.storage_offset() + t.numel()) * t.element_size()


def check_memory(memory, what: str) -> None:
    """That each storage ``_memory`` recorded still has its memory where it was: raises
    NativeKernelError, naming ``what`` reads it, where one lost it."""
    for storage, address, needed in memory:
        if storage.data_ptr() != address or storage.nbytes() < needed:
            raise NativeKernelError(f"a native {what}'s weight or cache lost its memory since it was checked")


def check_position(position: int, capacity: int) -> None:
    """That C may write ``position`` of a cache of ``capacity`` positions (a cache's ``length`` is
    an attribute anyone may set)."""
    if position < 0:
        raise InvalidArgumentError(f"a cache's length must not be negative, got {position}")
    if position >= capacity:  # as the cache itself says it (models/kv_cache.py)
        raise InvalidArgumentError(f"the cache holds {capacity} positions; {position + 1} were asked for")


def _vector(t: Tensor | None, n: int, dtype: torch.dtype) -> Tensor | None:
    """An alias of ``t`` if it is a contiguous CPU vector of ``n`` values of ``dtype``, else None."""
    if t is None or t.dtype != dtype or t.numel() != n or not t.is_cpu or not t.is_contiguous():
        return None
    return t.detach()


class NativeBlock:
    """block.c's step for one block, its operands held; ``__call__(x, layer_cache)`` is the new x."""

    def __init__(self, fn, products: list[NativeProduct], norms: list[tuple[Tensor, Tensor, float]], n_head: int,
                 scale: float, pre_norm: bool, activation: int):
        qkv, proj, up, down = products
        self.fn, self.dtype, self.variant = fn, qkv.dtype, qkv.variant  # the build block_step comes from
        self.n_embd, self.n_head = qkv.in_features, n_head
        aliases = [p.held() for p in products]  # [weight, scales, bias] of each, checked
        held = [t for operands in aliases for t in operands if t is not None] + [t for w, b, _ in norms for t in (w, b)]
        self._memory = [_memory(t) for t in held]  # checked before each call
        self._held = held
        self._cache, self.cache_act = None, 0  # the layer cache last accepted by takes, and its dtype for C

        def product(p: NativeProduct, operands: list[Tensor | None]) -> _Product:
            weight, scales, bias = map(_pointer, operands)
            return _Product(p.function, weight, scales, bias, p.in_features, p.out_features, p.group)

        (w1, b1, eps1), (w2, b2, eps2) = norms
        self._block = _Block(*map(product, products, aliases), w1.data_ptr(), b1.data_ptr(),
                             w2.data_ptr(), b2.data_ptr(), self.n_embd, n_head, up.out_features, eps1, eps2, scale,
                             int(pre_norm), activation, ACTIVATIONS[self.dtype])

    def takes(self, x: Tensor, layer_cache) -> bool:
        """Whether ``x`` is one row of this block's width and dtype on CPU, with no gradient to
        keep, and the block takes the layer's cache (``takes_cache``)."""
        if x.dtype != self.dtype or not x.is_cpu or x.numel() != self.n_embd or x.size(-1) != self.n_embd:
            return False
        if x.requires_grad and torch.is_grad_enabled():
            return False
        return self.takes_cache(layer_cache)

    def takes_cache(self, layer_cache) -> bool:
        """Whether the layer's cache is one this block can write: float32 or the activations' dtype
        (which holds their keys and values exactly), contiguous, on CPU, for one sequence of its
        heads (``[2, 1, H, S_max, D]``). Checked once per cache; its memory is checked on each call."""
        kv = layer_cache.keys_values  # [2, B, H, S_max, D]
        if kv is self._cache:
            return True
        if (kv.dtype not in (torch.float32, self.dtype) or not kv.is_cpu or not kv.is_contiguous() or kv.dim() != 5
                or tuple(kv.shape[:3]) != (2, 1, self.n_head) or kv.size(4) != self.n_embd // self.n_head):
            return False
        self._cache, self._cache_memory, self.cache_act = kv, _memory(kv), ACTIVATIONS[kv.dtype]
        self._keys, self._values, self._capacity = kv.data_ptr(), kv[1].data_ptr(), kv.size(3)
        return True

    def __call__(self, x: Tensor, layer_cache) -> Tensor:
        """The block on ``x`` ``[..., C]`` at the next position of ``layer_cache``."""
        if not self.takes(x, layer_cache):
            kinds = " or ".join(sorted({"float32", str(self.dtype).removeprefix("torch.")}))
            raise InvalidArgumentError(f"a native block takes one {self.dtype} CPU row of {self.n_embd} values with "
                                       f"no gradient to keep and a contiguous {kinds} CPU cache [2, 1, {self.n_head}, "
                                       f"S, {self.n_embd // self.n_head}]")
        return self.run(x, layer_cache)

    def run(self, x: Tensor, layer_cache) -> Tensor:
        """``__call__`` for what ``takes`` has just accepted."""
        check_memory((*self._memory, self._cache_memory), "block")
        position, capacity = layer_cache.cache.length, self._capacity
        check_position(position, capacity)
        x = x.contiguous()
        out = torch.empty_like(x)
        status = self.fn(ctypes.byref(self._block), x.data_ptr(), out.data_ptr(), self._keys, self._values, capacity,
                         position, self.cache_act, torch.get_num_threads())
        if status != 0:
            raise NativeKernelError(f"a native block step could not allocate its scratch memory ({status})")
        return out


def native_block(products: list[NativeProduct | None], norms: list[tuple[Tensor | None, Tensor | None, float]],
                 n_head: int, scale: float, pre_norm: bool, activation: str | None) -> NativeBlock | None:
    """block.c's step for a block of these parts: the products ``[qkv, proj, up, down]`` (their
    native forms), the two layer norms ``(weight, bias, eps)``; None where a part has no native
    form (a kernel missing, PyTorch's kernels forced, a norm without bias, another non-linearity,
    ``activation`` None). block.c comes from the first product's build."""
    if any(p is None for p in products) or activation not in NONLINEARITIES:
        return None
    fn = _function(products[0].variant)
    if fn is None:
        return None
    qkv, proj, up, down = products
    width, dtype = qkv.in_features, qkv.dtype
    shapes = [(p.in_features, p.out_features) for p in products]
    if (len({p.dtype for p in products}) != 1 or n_head <= 0 or width % n_head
            or shapes != [(width, 3 * width), (width, width), (width, up.out_features), (up.out_features, width)]):
        return None
    vectors = [(_vector(w, width, dtype), _vector(b, width, dtype), float(eps)) for w, b, eps in norms]
    if any(w is None or b is None for w, b, _ in vectors):
        return None
    return NativeBlock(fn, products, vectors, n_head, scale, pre_norm, NONLINEARITIES[activation])


class BlockStep:
    """``functional.block``'s call, ``(x, mask, layer_past, use_cache, head_mask,
    output_attentions) -> (x, present, weights)``: a batch-1 step of one new token over a
    preallocated cache runs block.c (made on the first such call by ``make``; None makes it
    never), everything else ``python``."""

    def __init__(self, python: Callable, make: Callable[[], NativeBlock | None]):
        self.python, self._make, self._native, self._made = python, make, None, False

    def __call__(self, x: Tensor, mask: Tensor | None, layer_past=None, use_cache: bool = False,
                 head_mask: Tensor | None = None, output_attentions: bool = False):
        if (mask is None and head_mask is None and not output_attentions and isinstance(layer_past, LayerCache)
                and x.numel() == x.size(-1)):
            native = self.native()
            if native is not None and native.takes(x, layer_past):
                return native.run(x, layer_past), layer_past, None
        return self.python(x, mask, layer_past, use_cache, head_mask, output_attentions)

    def native(self) -> NativeBlock | None:
        """The block's native step (made on the first ask), or None where it has none."""
        if not self._made:
            self._native, self._made = self._make(), True
        return self._native
