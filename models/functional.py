"""The computation of GPT and GPT-2, written once as plain functions over tensors.

Two callers run these same functions. The modules (models/layers.py, the families' blocks) hand
in their submodules as the callables, so hooks, replaced layers and training-mode dropout take
part. ``generate`` hands in each layer's parameters bound once to their product kernels
(``bind`` on each module), which saves the module calls of every decoding step. Equal by
construction: there is no second forward to keep in step with the first.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .kv_cache import LayerCache

Step = Callable[[Tensor], Tensor]


def causal_mask(length: int, total: int, device) -> Tensor:
    """``[T, S]``: the last ``length`` of ``total`` positions each see themselves and all before."""
    return torch.ones(length, total, dtype=torch.bool, device=device).tril(total - length)  # [T, S]


def masks_and_positions(attention_mask: Tensor | None, position_ids: Tensor | None, batch: int,
                        length: int, past_len: int, device) -> tuple[Tensor | None, Tensor]:
    """The attention mask for ``scaled_dot_product_attention`` and the positions of the new tokens.

    ``attention_mask`` (1 = token, 0 = padding; any other value counts as a token, as in
    transformers' attention) covers past and new positions. Without
    ``position_ids`` the positions count real tokens only, so a left-padded row sees the positions
    it would see unpadded; a padding position is its index, as in transformers (so a right-padded
    row is exactly transformers', padding included, which a loss over it reads). The mask is None
    where plain causal attention (``is_causal``) or no mask at all (a single new token) does the job.
    """
    total = past_len + length
    if attention_mask is None:
        mask = causal_mask(length, total, device) if past_len and length > 1 else None  # [T, S]
        if position_ids is None:
            position_ids = torch.arange(past_len, total, device=device).expand(batch, length)  # [B, T]
        return mask, position_ids.reshape(-1, length)
    tokens = attention_mask.reshape(batch, -1).bool()  # [B, S]
    if position_ids is None:
        counted = tokens.long().cumsum(-1) - 1  # [B, S]: a mask of 2s or 0.5s counted 2s or 0s here
        index = torch.arange(total, device=device).expand(batch, total)  # [B, S]
        position_ids = torch.where(tokens, counted, index)[:, past_len:]  # [B, T]
    keys = tokens[:, None, None, :]  # [B, 1, 1, S]
    mask = keys & causal_mask(length, total, device)  # [B, 1, T, S]
    # A query that sees no key at all (a left-pad position) would give NaN; let it see every key.
    # Its output is padding and no real position attends to it.
    return mask | ~mask.any(-1, keepdim=True), position_ids.reshape(-1, length)


def embed(input_ids: Tensor, position_ids: Tensor, tokens: Step, positions: Step,
          token_type_ids: Tensor | None = None) -> Tensor:
    """Token plus position embeddings ``[B, T, C]``; token types are embedded with the tokens'
    table, as in the original models."""
    x = tokens(input_ids) + positions(position_ids)  # [B, T, C]
    return x if token_type_ids is None else x + tokens(token_type_ids)


def split_heads(qkv: Tensor, n_head: int) -> Tensor:
    """``[B, T, 3 * C]`` (queries, keys, values) to ``[3, B, H, T, D]``."""
    B, T, _ = qkv.shape
    return qkv.view(B, T, 3, n_head, -1).permute(2, 0, 3, 1, 4)  # [3, B, H, T, D]


def merge_heads(y: Tensor) -> Tensor:
    """``[B, H, T, D]`` to ``[B, T, H * D]``."""
    B, H, T, D = y.shape
    return y.transpose(1, 2).reshape(B, T, H * D)  # [B, T, C]


def with_past(keys_values: Tensor, layer_past, use_cache: bool):
    """Keys and values ``[B, H, S, D]`` over past and new positions, and what to keep for the
    next call. ``layer_past`` is None, a ``(keys, values)`` pair, or a preallocated cache's layer
    (models/kv_cache.py), which writes the new positions in place."""
    if isinstance(layer_past, LayerCache):
        k, v = layer_past.append(keys_values)  # each [B, H, S, D]
        return k, v, layer_past
    k, v = keys_values[0], keys_values[1]  # each [B, H, T, D]
    if layer_past is not None:
        k = torch.cat((layer_past[0], k), dim=-2)  # [B, H, S, D]
        v = torch.cat((layer_past[1], v), dim=-2)
    return k, v, ((k, v) if use_cache else None)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float, dropout_p: float = 0.0) -> Tensor:
    """Scaled dot-product attention of ``q`` ``[B, H, T, D]`` over ``k``, ``v`` ``[B, H, S, D]``,
    the last ``T`` of the ``S`` positions being the queries'. ``mask`` None means causal (or, for
    one query, everything). Keys in float32 for a half-precision ``q`` (a CPU cache, see
    models/kv_cache.py) take ``q`` to float32 too; the result comes back in k's dtype."""
    if k.dtype != q.dtype:
        q = q.to(k.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and q.size(-2) > 1,
                                          dropout_p=dropout_p, scale=scale)  # [B, H, T, D]


def explicit_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float,
                       dropout: Step | None) -> tuple[Tensor, Tensor]:
    """Attention that also returns its weights ``[B, H, T, S]`` (``output_attentions``)."""
    scores = (q @ k.transpose(-1, -2)) * scale  # [B, H, T, S]
    visible = mask if mask is not None else causal_mask(q.size(-2), k.size(-2), q.device)
    weights = scores.masked_fill(~visible, float("-inf")).softmax(-1)
    if dropout is not None:
        weights = dropout(weights)
    return weights @ v, weights  # [B, H, T, D], [B, H, T, S]


def attention(x: Tensor, mask: Tensor | None, layer_past=None, use_cache: bool = False,
              head_mask: Tensor | None = None, output_attentions: bool = False, *, qkv: Step, proj: Step,
              n_head: int, scale: float, upcast: bool = False, attn_dropout: Step | None = None,
              resid_dropout: Step | None = None) -> tuple[Tensor, object, Tensor | None]:
    """Causal self-attention of ``x`` ``[B, T, C]``: the output ``[B, T, C]``, the cache to keep
    and, with ``output_attentions``, the weights. ``qkv`` and ``proj`` are the two products;
    the dropouts are None in eval mode."""
    heads = split_heads(qkv(x), n_head)  # [3, B, H, T, D]
    k, v, present = with_past(heads[1:], layer_past, use_cache)
    q = heads[0]  # [B, H, T, D]
    dtype = q.dtype
    if upcast:  # Mistral's reorder_and_upcast_attn: attention in float32
        q, k, v = q.float(), k.float(), v.float()
    weights = None
    if output_attentions:
        y, weights = explicit_attention(q, k, v, mask, scale, attn_dropout)
    else:
        dropout_p = getattr(attn_dropout, "p", 0.0) if attn_dropout is not None else 0.0
        y = attend(q, k, v, mask, scale, dropout_p)  # [B, H, T, D]
    if head_mask is not None:
        y = y * head_mask  # zeroing a head's weights zeroes its output
    y = proj(merge_heads(y.to(dtype)))  # [B, T, C]
    return (y if resid_dropout is None else resid_dropout(y)), present, weights


def feed_forward(x: Tensor, *, up: Step, act: Step, down: Step, dropout: Step | None = None) -> Tensor:
    """Widen, non-linearity, narrow (and dropout when training)."""
    y = down(act(up(x)))
    return y if dropout is None else dropout(y)


def block(x: Tensor, mask: Tensor | None, layer_past=None, use_cache: bool = False,
          head_mask: Tensor | None = None, output_attentions: bool = False, *, ln_1: Step, attn, ln_2: Step,
          mlp: Step, pre_norm: bool) -> tuple[Tensor, object, Tensor | None]:
    """One transformer block. ``pre_norm`` is GPT-2's order (normalise, attend, add); otherwise
    GPT's (attend, add, normalise)."""
    if pre_norm:
        attended, present, weights = attn(ln_1(x), mask, layer_past, use_cache, head_mask, output_attentions)
        x = x + attended
        return x + mlp(ln_2(x)), present, weights
    attended, present, weights = attn(x, mask, layer_past, use_cache, head_mask, output_attentions)
    x = ln_1(x + attended)
    return ln_2(x + mlp(x)), present, weights
