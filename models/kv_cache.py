"""A key/value cache allocated once for a whole generation (no concatenation per token).

Pass it as ``past`` to a model's forward: each attention layer writes its new keys and values
into the next free positions and attends over the filled part; the decoder then advances
``length``. It comes back as ``past_key_values``, ready for the next call.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import InvalidArgumentError


class LayerCache:
    """One layer's slice of the cache: ``append`` writes new positions and returns all filled."""

    def __init__(self, cache: StaticKVCache, index: int):
        self.cache = cache
        self.keys_values = cache.keys_values[index]  # [2, B, H, S_max, D]

    def append(self, keys_values: Tensor) -> tuple[Tensor, Tensor]:
        """Write ``keys_values`` ([2, B, H, T, D]: keys, then values) in one copy; return the
        keys and the values of all filled positions (each [B, H, S, D])."""
        start = self.cache.length
        end = start + keys_values.size(-2)
        if end > self.cache.capacity:
            raise InvalidArgumentError(f"the cache holds {self.cache.capacity} positions; {end} were asked for")
        self.keys_values.narrow(3, start, end - start).copy_(keys_values)
        filled = self.keys_values.narrow(3, 0, end)  # [2, B, H, S, D]
        if self.cache.widened:  # PyTorch's attention over them as over a float32 cache
            filled = filled.float()
        return filled[0], filled[1]


class StaticKVCache:
    def __init__(self, n_layer: int, batch: int, n_head: int, head_dim: int, capacity: int,
                 dtype: torch.dtype, device: torch.device | str = "cpu"):
        shape = (n_layer, 2, batch, n_head, capacity, head_dim)
        self.keys_values = torch.empty(shape, dtype=dtype, device=device)  # [L, 2, B, H, S_max, D]
        self.widened = self.keys_values.is_cpu and dtype in (torch.bfloat16, torch.float16)  # see for_model
        self.capacity = capacity
        self.length = 0
        self.layers = [LayerCache(self, i) for i in range(n_layer)]

    @classmethod
    def for_model(cls, model, batch: int, capacity: int, compact: bool = False) -> StaticKVCache:
        """A cache for ``model``'s layers. A half-precision model on CPU gets a float32 cache:
        PyTorch's CPU attention kernel runs faster over float32 keys than over bfloat16 ones, which
        is worth converting each new key and query (docs/performance.md). ``compact`` keeps them
        in the model's dtype, which holds them exactly in half the bytes, for steps that read
        them as they are (the native decoder's, batch 1); PyTorch's attention reads such a cache
        widened to float32 (``widened``), so that it computes what it would over a float32 one."""
        config = model.config
        dtype = model.dtype
        if model.device.type == "cpu" and dtype in (torch.bfloat16, torch.float16) and not compact:
            dtype = torch.float32
        return cls(config.n_layer, batch, config.n_head, config.n_embd // config.n_head, capacity, dtype, model.device)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> LayerCache:
        return self.layers[index]


class LayerCaches(tuple):
    """The cache a forward returns: per layer a ``(keys, values)`` pair, as transformers' legacy
    tuples are, with the two methods of its ``Cache`` objects that code written for transformers 5
    calls."""

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """How many positions the cache holds."""
        return self[layer_idx][0].size(-2) if self else 0

    def to_legacy_cache(self) -> tuple:
        return tuple(self)

    def __reduce__(self):
        """Saved (``torch.save``, pickle) as a plain tuple, which loads where this package (imported
        under a private name) is not."""
        return tuple, (tuple(self),)


def past_length(past) -> int:
    """How many positions a cache (preallocated, or per-layer ``(keys, values)``) holds."""
    if isinstance(past, StaticKVCache):
        return past.length
    return 0 if not past else past[0][0].size(-2)


def is_transformers_cache(past) -> bool:
    """Whether ``past`` is one of transformers 5's cache objects (``DynamicCache``...), which the
    forward extends in place, as transformers' models do."""
    return (not isinstance(past, (tuple, list, StaticKVCache)) and callable(getattr(past, "update", None))
            and callable(getattr(past, "get_seq_length", None)))


def normalize_past(past, n_layer: int):
    """Accept the cache as returned (per layer a ``(key, value)`` pair), in the 2019 layout (per
    layer one tensor stacking key and value, ``[2, batch, heads, time, head_dim]``, or all layers
    stacked in one tensor), or as transformers' ``DynamicCache`` (empty: no past)."""
    if past is None or isinstance(past, StaticKVCache):
        return past
    if is_transformers_cache(past):
        if not any(cls.__name__ == "DynamicCache" for cls in type(past).__mro__):
            raise InvalidArgumentError(f"past_key_values is transformers' {type(past).__name__}, which these models "
                                       "do not fill; pass a DynamicCache, the cache a previous call returned, or none")
        if past.get_seq_length() == 0:
            return None
    if isinstance(past, Tensor) and past.dim() != 6:  # model(ids, mask): transformers' OpenAI GPT takes the mask second
        raise InvalidArgumentError(f"past (the second argument) must be the cache a previous call returned, got a "
                                   f"tensor of shape {list(past.shape)}; pass an attention mask by keyword: "
                                   "model(input_ids, attention_mask=mask)")
    past = tuple(past)
    if len(past) != n_layer:
        raise InvalidArgumentError(f"past_key_values has {len(past)} layers, the model has {n_layer}")
    return tuple(tuple(layer.unbind(0)) if isinstance(layer, Tensor) else tuple(layer) for layer in past)
