"""The embeddings and every block for one new token in one native call (decoder.c's
``decoder_step``), for ``generate``'s batch-1 decoding steps; for its greedy steps, also the
final norm, the head and the choice of the next token, for one step or a run of them
(``greedy_steps``).

A native block step (block.py) leaves a few microseconds of Python around each block: its
checks and its call. They run just after the block's weights have streamed through the caches,
so they find their code and data cold, and cost several times what they cost warm; so do the
embeddings' two lookups and their sum. ``decoder_step`` runs the sum and the blocks in one call,
with one check of all the memory they read. It computes what the blocks' own steps compute, bit
for bit (the embeddings' sum rounds as PyTorch's does), so ``generate`` and the modules' forward
keep giving the same logits. A greedy step goes on in C with the final norm (the function
every bound final norm of one row runs, norm.py), the head's one-row product (the kernel its
bound product runs, where that is a native one) and the argmax of the logits (argmax.py's), so
it chooses what the logits of the other steps would choose.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ...errors import InvalidArgumentError
from ..kv_cache import StaticKVCache
from .block import BlockStep, NativeBlock, _Block, _memory, _Product, check_memory, check_position
from .build import library
from .norm import NativeNorm
from .products import NativeKernelError, NativeProduct, _pointer

_POINTER, _SIZE = ctypes.c_void_p, ctypes.c_int64


class _Decoder(ctypes.Structure):
    _fields_ = [("tokens", _POINTER), ("positions", _POINTER), ("blocks", ctypes.POINTER(_Block)),
                ("keys", ctypes.POINTER(_POINTER)), ("values", ctypes.POINTER(_POINTER)), ("n_layer", _SIZE),
                ("capacity", _SIZE), ("cache_act", ctypes.c_int)]


class _Greedy(ctypes.Structure):
    _fields_ = [("body", ctypes.POINTER(_Decoder)), ("norm", _POINTER), ("norm_weight", _POINTER),
                ("norm_bias", _POINTER), ("norm_eps", ctypes.c_float), ("head", _Product)]


_SIGNATURES = {  # decoder.c's functions: argument types, result type
    "decoder_step": ([ctypes.POINTER(_Decoder), _SIZE, _SIZE, _POINTER, ctypes.c_int],  # decoder, token, position,
                     ctypes.c_int),  # x, threads
    "greedy_steps": ([ctypes.POINTER(_Greedy), _SIZE, _SIZE, _SIZE, _POINTER, _POINTER, _POINTER, ctypes.c_int],
                     ctypes.c_int64),  # greedy, token, position, n, chosen, x, logits, threads
}


def _function(variant: str, name: str = "decoder_step"):
    """decoder.c's ``decoder_step`` (or ``greedy_steps``) of a build, or None."""
    lib = library(variant)
    if lib is None:
        return None
    fn = getattr(lib, name)
    if fn.argtypes is None:
        fn.argtypes, fn.restype = _SIGNATURES[name]
    return fn


class NativeDecoder:
    """decoder.c's decoder step over these embedding tables and native blocks, their operands held;
    ``run(input_ids, cache)`` is the last hidden state ``[1, C]`` before any final norm."""

    def __init__(self, fn, embeddings: tuple[nn.Embedding, nn.Embedding], tokens: Tensor, positions: Tensor,
                 blocks: list[NativeBlock]):
        self.fn, self.blocks, self.dtype, self.n_embd = fn, blocks, blocks[0].dtype, blocks[0].n_embd
        self.variant = blocks[0].variant
        self._embeddings, self._tables = embeddings, (tokens, positions)
        self._weights = [_memory(t) for t in self._tables] + [m for block in blocks for m in block._memory]
        self._structs = (_Block * len(blocks))(*(block._block for block in blocks))  # copies, as C reads them
        self._decoder = _Decoder(tokens.data_ptr(), positions.data_ptr(), self._structs, None, None, len(blocks), 0, 0)
        self._caches: list | None = None  # the layers' cache tensors last accepted by takes

    def takes(self, cache) -> bool:
        """Whether the embeddings' tables are still the ones taken (``weight.data = ...`` since
        makes the blocks' own steps run, which look the new ones up) and every block takes its
        layer of ``cache`` (``NativeBlock.takes_cache``)."""
        if any(e.weight.data_ptr() != table.data_ptr() or e.weight.shape != table.shape
               for e, table in zip(self._embeddings, self._tables)):
            return False
        layers = cache.layers
        if self._caches is not None and len(layers) == len(self._caches) and all(
                layer.keys_values is kv for layer, kv in zip(layers, self._caches)):
            return True
        if len(layers) != len(self.blocks) or not all(b.takes_cache(layer) for b, layer in zip(self.blocks, layers)):
            return False
        shapes = {(block._capacity, block.cache_act) for block in self.blocks}
        if len(shapes) != 1:
            return False
        self._keys = (_POINTER * len(layers))(*(block._keys for block in self.blocks))
        self._values = (_POINTER * len(layers))(*(block._values for block in self.blocks))
        self._decoder.keys, self._decoder.values = self._keys, self._values
        self._decoder.capacity, self._decoder.cache_act = shapes.pop()
        self._cache_memory = list({b._cache_memory[1]: b._cache_memory for b in self.blocks}.values())  # by address
        self._caches = [layer.keys_values for layer in layers]
        return True

    def checked(self, input_ids: Tensor, cache, steps: int = 1) -> tuple[int, int]:
        """``takes`` having accepted ``cache``: the token of ``input_ids`` ``[1, 1]`` and the
        cache's next position, each checked (for ``steps`` steps from there), and the memory C
        will read."""
        check_memory((*self._weights, *self._cache_memory), "decoder")
        token, position, capacity = int(input_ids), cache.length, self._decoder.capacity
        vocabulary, positions = self._tables[0].size(0), self._tables[1].size(0)
        if not 0 <= token < vocabulary:
            raise InvalidArgumentError(f"token id {token} is outside the vocabulary of {vocabulary}")
        check_position(position, capacity)
        check_position(position + steps - 1, capacity)
        if position + steps > positions:  # as the modules say it (models/decoder.py)
            raise InvalidArgumentError(f"{position} past plus {steps} new positions exceed n_positions={positions}")
        return token, position

    def run(self, input_ids: Tensor, cache) -> Tensor:
        """``takes`` having accepted ``cache``: the token of ``input_ids`` ``[1, 1]`` at the cache's
        next position through the body; the cache's length grows by one."""
        token, position = self.checked(input_ids, cache)
        x = torch.empty(1, self.n_embd, dtype=self.dtype)  # [1, C]
        status = self.fn(ctypes.byref(self._decoder), token, position, x.data_ptr(), torch.get_num_threads())
        if status != 0:
            raise NativeKernelError(f"a native decoder step could not allocate its scratch memory ({status})")
        cache.length += 1
        return x


def _table(embedding: nn.Embedding, width: int, dtype: torch.dtype) -> Tensor | None:
    """An alias of the embedding's table if C can read it as it is looked up: no ``max_norm``
    (which rewrites the table on lookup), a contiguous CPU ``[n, width]`` tensor of ``dtype``."""
    table = embedding.weight
    if (embedding.max_norm is not None or table.dtype != dtype or not table.is_cpu or not table.is_contiguous()
            or table.dim() != 2 or table.size(1) != width):
        return None
    return table.detach()


def native_decoder(tokens: nn.Embedding, positions: nn.Embedding, steps: list[BlockStep]) -> NativeDecoder | None:
    """The decoder step over these embeddings and the blocks' native steps; None where a block has
    none, the blocks come from different builds, or a table cannot be read as it is (``_table``)."""
    blocks = [step.native() for step in steps]
    if not blocks or any(block is None for block in blocks):
        return None
    dtype, width, variant = blocks[0].dtype, blocks[0].n_embd, blocks[0].variant
    if any(block.dtype != dtype or block.n_embd != width or block.variant != variant for block in blocks):
        return None  # block_step of another build rounds otherwise: the modules run each block with its own
    tables = [_table(embedding, width, dtype) for embedding in (tokens, positions)]
    fn = _function(variant)
    if fn is None or any(table is None for table in tables):
        return None
    return NativeDecoder(fn, (tokens, positions), *tables, blocks)


class BodyStep:
    """``(input_ids, cache) -> last hidden state [1, C] or None``: the native decoder step for one
    token of one sequence over a preallocated cache (made on the first such call by ``make``),
    None where it cannot run (the caller then runs the blocks' own steps)."""

    def __init__(self, make: Callable[[], NativeDecoder | None]):
        self._make, self._native, self._made = make, None, False

    def __call__(self, input_ids: Tensor, cache) -> Tensor | None:
        native = self.native() if _one_token(input_ids, cache) else None
        if native is None or not native.takes(cache):
            return None
        return native.run(input_ids, cache)

    def native(self) -> NativeDecoder | None:
        """The native decoder step (made on the first ask), or None where there is none."""
        if not self._made:
            self._native, self._made = self._make(), True
        return self._native


def _one_token(input_ids: Tensor, cache) -> bool:
    """Whether this is a step C can take: one token of one sequence over a preallocated cache, and
    no gradient (generate's never; C keeps none)."""
    return input_ids.shape == (1, 1) and isinstance(cache, StaticKVCache) and not torch.is_grad_enabled()


class GreedyStep:
    """``(input_ids, cache, steps=1) -> the next steps tokens [steps] or None``: ``body``'s native
    decoder step, the final norm (a NativeNorm, or None for a body without one) and the head's
    product (``head()`` gives it: the native product its bound form runs for one row, or None),
    ``steps`` times in one native call (``NativeGreedy``, made on the first such call), from one
    token of one sequence; None where it cannot run (the caller then takes the logits' way, which
    chooses the same)."""

    def __init__(self, body: BodyStep, norm: NativeNorm | None, head: Callable[[], NativeProduct | None]):
        self._body, self._norm, self._head, self._native, self._made = body, norm, head, None, False

    def __call__(self, input_ids: Tensor, cache, steps: int = 1) -> Tensor | None:
        decoder = self._body.native() if _one_token(input_ids, cache) else None
        if decoder is None or not decoder.takes(cache):
            return None
        if not self._made:
            head = self._head()
            self._native, self._made = None if head is None else native_greedy(decoder, self._norm, head), True
        return None if self._native is None else self._native.run(input_ids, cache, steps)


class NativeGreedy:
    """decoder.c's greedy steps: ``decoder``'s body, then ``norm`` (None for a body without a final
    norm) and ``head``'s one-row product; ``run(input_ids, cache, steps)`` is the next ``steps``
    tokens ``[steps]``, or None where the head's operands are no longer the ones taken
    (``weight.data = ...`` or a move since: the head's own product then reads the new ones)."""

    def __init__(self, fn, decoder: NativeDecoder, norm: NativeNorm | None, head: NativeProduct):
        self.fn, self.decoder, self._head = fn, decoder, head
        operands = head.held()  # [weight, scales, bias], checked
        norm_operands = norm.operands if norm is not None else (None, None)
        self._pointers = [_pointer(t) for t in operands]  # compared with the head's own before each call
        self._memory = norm.memory if norm is not None else []
        self._held = (operands, norm_operands)
        self._greedy = _Greedy(ctypes.pointer(decoder._decoder), norm.function if norm is not None else None,
                               *map(_pointer, norm_operands), norm.eps if norm is not None else 0.0,
                               _Product(head.function, *map(_pointer, operands), head.in_features, head.out_features,
                                        head.group))
        self._x = torch.empty(decoder.n_embd, dtype=decoder.dtype)  # [C], C's scratch
        self._logits = torch.empty(head.out_features, dtype=decoder.dtype)  # [V], C's scratch

    def run(self, input_ids: Tensor, cache, steps: int = 1) -> Tensor | None:
        """``decoder.takes`` having accepted ``cache``: the ``steps`` tokens after ``input_ids``
        ``[1, 1]``, each chosen from the one before, the cache's length grown by ``steps``; None
        (nothing done) where the head's operands moved."""
        if steps < 1:
            raise InvalidArgumentError(f"a greedy run takes at least one step, got {steps}")
        if [_pointer(t) for t in self._head.held()] != self._pointers:
            return None
        token, position = self.decoder.checked(input_ids, cache, steps)
        check_memory(self._memory, "greedy step")
        chosen = torch.empty(steps, dtype=torch.int64)
        status = self.fn(ctypes.byref(self._greedy), token, position, steps, chosen.data_ptr(), self._x.data_ptr(),
                         self._logits.data_ptr(), torch.get_num_threads())
        if status != 0:
            raise NativeKernelError(f"a native greedy run of {steps} steps from position {position} failed: a "
                                    f"kernel could not allocate its scratch memory ({status})")
        cache.length += steps
        return chosen


def native_greedy(decoder: NativeDecoder, norm: NativeNorm | None, head: NativeProduct) -> NativeGreedy | None:
    """The greedy steps of ``decoder``'s body, ``norm`` and ``head``; None where their widths or
    dtypes disagree, the head chooses among more tokens than the embedding has (C feeds each
    choice to the next step unchecked), or the build has none."""
    if (head.in_features != decoder.n_embd or head.dtype != decoder.dtype
            or head.out_features > decoder._tables[0].size(0)
            or (norm is not None and (norm.width != decoder.n_embd or norm.dtype != decoder.dtype))):
        return None
    fn = _function(decoder.variant, "greedy_steps")
    return None if fn is None else NativeGreedy(fn, decoder, norm, head)
