"""Checks of what a caller hands the model's forward, made before any work starts, each error
naming the argument and what was expected."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ArgumentTypeError, InvalidArgumentError

_ID_DTYPES = (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8)


def check_token_ids(input_ids: Tensor, vocab_size: int, what: str = "input_ids") -> Tensor:
    """``input_ids`` checked (an integer tensor of at least one dimension, every id in
    ``[0, vocab_size)``), as int64 where it was a smaller integer type."""
    if not isinstance(input_ids, Tensor):
        raise ArgumentTypeError(f"{what} must be a tensor of token ids, got {type(input_ids).__name__}")
    if input_ids.dtype not in _ID_DTYPES:
        raise ArgumentTypeError(f"{what} must be an integer tensor, got {input_ids.dtype}")
    if input_ids.dim() == 0:
        raise InvalidArgumentError(f"{what} must have a length dimension ([batch, length]), got a 0-D tensor")
    if input_ids.numel():
        low, high = (int(v) for v in torch.aminmax(input_ids))  # one pass, one sync
        if low < 0 or high >= vocab_size:
            raise InvalidArgumentError(f"{what} must lie in [0, {vocab_size}), got values in [{low}, {high}]")
    return input_ids if input_ids.dtype in (torch.int64, torch.int32) else input_ids.long()


def check_not_empty(shape: torch.Size, what: str) -> torch.Size:
    """``shape`` (the input's, without the embedding width), refused where it holds no token: an
    empty batch or an empty row failed deep inside the blocks, in a reshape."""
    if not shape.numel():
        raise InvalidArgumentError(f"{what} has shape {list(shape)}: give at least one token in at least one row")
    return shape


def check_attention_mask(attention_mask: Tensor | None, batch: int, past_len: int, length: int) -> None:
    """``attention_mask`` covers every row and all past and new positions."""
    if attention_mask is None:
        return
    total = past_len + length
    if attention_mask.numel() != batch * total or attention_mask.shape[-1] != total:
        raise InvalidArgumentError(
            f"attention_mask has shape {list(attention_mask.shape)}, but the past holds {past_len} positions "
            f"and the input {length} in {batch} rows: it must cover all {total} positions of each row"
        )


def head_mask_per_layer(head_mask: Tensor | None, n_layer: int, dtype: torch.dtype) -> list[Tensor | None]:
    """Spread a ``[heads]`` or ``[layers, heads]`` mask (1 keeps a head, 0 silences it) over layers,
    each entry shaped to multiply a ``[B, H, T, D]`` attention output."""
    if head_mask is None:
        return [None] * n_layer
    head_mask = head_mask.to(dtype)
    if head_mask.dim() == 1:
        head_mask = head_mask.expand(n_layer, -1)  # [L, H]
    if head_mask.dim() != 2 or head_mask.size(0) != n_layer:
        raise InvalidArgumentError(f"head_mask must be [n_head] or [n_layer={n_layer}, n_head], got {list(head_mask.shape)}")
    return [layer_mask.view(1, -1, 1, 1) for layer_mask in head_mask]  # each [1, H, 1, 1]


def check_choice_positions(mc_token_ids: Tensor, choices_shape: torch.Size) -> None:
    """``mc_token_ids`` gives one position of each choice (``[batch, choices]`` for inputs
    ``[batch, choices, T]``)."""
    *leading, length = choices_shape
    if not isinstance(mc_token_ids, Tensor) or mc_token_ids.is_floating_point():
        raise ArgumentTypeError("mc_token_ids must be an integer tensor of positions")
    if list(mc_token_ids.shape) != leading:
        raise InvalidArgumentError(f"mc_token_ids has shape {list(mc_token_ids.shape)}; it must be {leading}, one "
                                   "position per choice")
    check_token_ids(mc_token_ids, length, "mc_token_ids")
