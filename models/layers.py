"""Building blocks that GPT and GPT-2 share: the checkpoint-layout linear layer, attention with
a key/value cache, the attention mask, and the multiple-choice summary head."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .matmul import linear_in_out

LayerPast = tuple[Tensor, Tensor]


class Conv1D(nn.Module):
    """A linear layer whose weight is stored ``[in_features, out_features]``: ``y = x @ W + b``.

    OpenAI's TensorFlow checkpoints stored their projections this way (as 1x1 convolutions, hence
    the name every GPT checkpoint uses), so keeping the layout lets checkpoints load without a
    transpose.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.empty(out_features))

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.size(-1))  # [batch * time, in]
        return linear_in_out(flat, self.weight, self.bias).view(*x.shape[:-1], -1)  # [..., out]


def activation(name: str):
    """The feed-forward non-linearity named by a config (``gelu_new`` is GPT's tanh approximation)."""
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")
    return {"gelu": F.gelu, "relu": F.relu, "silu": F.silu, "swish": F.silu, "tanh": torch.tanh}[name]


class MLP(nn.Module):
    """The feed-forward half of a block: widen, non-linearity, narrow, dropout."""

    def __init__(self, n_embd: int, inner_dim: int, activation_name: str, pdrop: float):
        super().__init__()
        self.c_fc = Conv1D(n_embd, inner_dim)
        self.c_proj = Conv1D(inner_dim, n_embd)
        self.act = activation(activation_name)
        self.dropout = nn.Dropout(pdrop)

    def forward(self, x: Tensor) -> Tensor:
        y = self.c_proj(self.act(self.c_fc(x)))
        return self.dropout(y) if self.training else y


def past_length(past) -> int:
    if hasattr(past, "length"):  # a preallocated cache
        return past.length
    return 0 if not past else past[0][0].size(-2)


def normalize_past(past, n_layer: int) -> tuple[LayerPast, ...] | None:
    """Accept the cache as returned (per layer a ``(key, value)`` pair) or in the 2019 layout
    (per layer one tensor stacking key and value, ``[2, batch, heads, time, head_dim]``)."""
    if past is None or hasattr(past, "length"):
        return past
    past = tuple(past)
    if len(past) != n_layer:
        raise ValueError(f"past_key_values has {len(past)} layers, the model has {n_layer}")
    return tuple(tuple(layer.unbind(0)) if isinstance(layer, Tensor) else tuple(layer) for layer in past)


def masks_and_positions(attention_mask: Tensor | None, position_ids: Tensor | None, batch: int,
                        length: int, past_len: int, device) -> tuple[Tensor | None, Tensor]:
    """The attention mask for ``scaled_dot_product_attention`` and the positions of the new tokens.

    ``attention_mask`` (1 = token, 0 = padding) covers past and new positions. Without
    ``position_ids`` the positions count real tokens only, so a left-padded row sees the positions
    it would see unpadded. The mask is None where plain causal attention (``is_causal``) or no
    mask at all (a single new token) does the job.
    """
    total = past_len + length
    if attention_mask is None:
        mask = causal_mask(length, total, device) if past_len and length > 1 else None  # [T, S]
        if position_ids is None:
            position_ids = torch.arange(past_len, total, device=device).expand(batch, length)  # [B, T]
        return mask, position_ids.reshape(-1, length)
    attention_mask = attention_mask.reshape(batch, -1)  # [B, S]
    if attention_mask.shape[-1] != total:
        raise ValueError(
            f"attention_mask covers {attention_mask.shape[-1]} positions, but the past holds "
            f"{past_len} and the input {length}: it must cover all {total}"
        )
    if position_ids is None:
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past_len:]  # [B, T]
    keys = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, S]
    mask = keys & causal_mask(length, total, device)  # [B, 1, T, S]
    # A query that sees no key at all (a left-pad position) would give NaN; let it see every key.
    # Its output is padding and no real position attends to it.
    return mask | ~mask.any(-1, keepdim=True), position_ids.reshape(-1, length)


def causal_mask(length: int, total: int, device) -> Tensor:
    """``[T, S]``: the last ``length`` of ``total`` positions each see themselves and all before."""
    return torch.ones(length, total, dtype=torch.bool, device=device).tril(total - length)  # [T, S]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention through ``scaled_dot_product_attention``, with a cache."""

    def __init__(self, n_embd: int, n_head: int, attn_pdrop: float, resid_pdrop: float,
                 scale: float, upcast: bool = False):
        super().__init__()
        self.n_head = n_head
        self.scale = scale
        self.upcast = upcast  # compute attention in float32 (Mistral's reorder_and_upcast_attn)
        self.c_attn = Conv1D(n_embd, 3 * n_embd)
        self.c_proj = Conv1D(n_embd, n_embd)
        self.attn_dropout = nn.Dropout(attn_pdrop)
        self.resid_dropout = nn.Dropout(resid_pdrop)

    def forward(self, x: Tensor, mask: Tensor | None, layer_past: LayerPast | None = None,
                use_cache: bool = False, head_mask: Tensor | None = None,
                output_attentions: bool = False) -> tuple[Tensor, LayerPast | None, Tensor | None]:
        B, T, C = x.shape
        qkv = split_heads(self.c_attn(x), B, T, self.n_head)  # [3, B, H, T, D]
        q = qkv[0]  # [B, H, T, D]
        if hasattr(layer_past, "append"):  # a preallocated cache (models/kv_cache.py)
            k, v = layer_past.append(qkv[1:])  # each [B, H, S, D]
            present = layer_past
        else:
            k, v = qkv[1], qkv[2]  # each [B, H, T, D]
            if layer_past is not None:
                k = torch.cat((layer_past[0], k), dim=-2)  # [B, H, S, D]
                v = torch.cat((layer_past[1], v), dim=-2)
            present = (k, v) if use_cache else None
        dtype = q.dtype
        if self.upcast:
            q, k, v = q.float(), k.float(), v.float()

        weights = None
        if output_attentions:
            scores = (q @ k.transpose(-1, -2)) * self.scale  # [B, H, T, S]
            visible = mask if mask is not None else causal_mask(T, k.size(-2), x.device)
            scores = scores.masked_fill(~visible, float("-inf"))
            weights = self.attn_dropout(scores.softmax(-1))
            y = weights @ v  # [B, H, T, D]
        else:
            y = attend(q, k, v, mask, self.scale, self.attn_dropout.p if self.training else 0.0)  # [B, H, T, D]
        if head_mask is not None:
            y = y * head_mask  # zeroing a head's weights zeroes its output
        y = self.c_proj(merge_heads(y.to(dtype)))  # [B, T, C]
        return (self.resid_dropout(y) if self.training else y), present, weights


def split_heads(qkv: Tensor, batch: int, length: int, n_head: int) -> Tensor:
    """``[..., 3 * C]`` (queries, keys, values of ``batch * length`` positions) to
    ``[3, B, H, T, D]``."""
    return qkv.view(batch, length, 3, n_head, -1).permute(2, 0, 3, 1, 4)  # [3, B, H, T, D]


def merge_heads(y: Tensor) -> Tensor:
    """``[B, H, T, D]`` to ``[B, T, H * D]``."""
    B, H, T, D = y.shape
    return y.transpose(1, 2).reshape(B, T, H * D)  # [B, T, C]


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float, dropout_p: float = 0.0) -> Tensor:
    """Scaled dot-product attention of ``q`` ``[B, H, T, D]`` over ``k``, ``v`` ``[B, H, S, D]``,
    the last ``T`` of the ``S`` positions being the queries'. ``mask`` None means causal (or, for
    one query, everything). Keys in float32 for a half-precision ``q`` (a CPU cache, see
    models/kv_cache.py) take ``q`` to float32 too; the result comes back in k's dtype."""
    if k.dtype != q.dtype:
        q = q.to(k.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and q.size(-2) > 1,
                                          dropout_p=dropout_p, scale=scale)  # [B, H, T, D]


def attention_scale(head_dim: int, scale_weights: bool = True, layer_idx: int | None = None) -> float:
    scale = 1.0 / math.sqrt(head_dim) if scale_weights else 1.0
    return scale / (layer_idx + 1) if layer_idx is not None else scale


def head_mask_per_layer(head_mask: Tensor | None, n_layer: int) -> list[Tensor | None]:
    """Spread a ``[heads]`` or ``[layers, heads]`` mask (1 keeps a head, 0 silences it) over layers,
    each entry shaped to multiply a ``[B, H, T, D]`` attention output."""
    if head_mask is None:
        return [None] * n_layer
    if head_mask.dim() == 1:
        head_mask = head_mask.expand(n_layer, -1)  # [L, H]
    if head_mask.dim() != 2 or head_mask.size(0) != n_layer:
        raise ValueError(f"head_mask must be [n_head] or [n_layer={n_layer}, n_head], got {list(head_mask.shape)}")
    return [layer_mask.view(1, -1, 1, 1) for layer_mask in head_mask]  # each [1, H, 1, 1]


class SequenceSummary(nn.Module):
    """The multiple-choice head: pick one hidden state per sequence, then project it.

    ``summary_type`` picks the state: ``cls_index`` (at ``mc_token_ids``, else the last), ``last``,
    ``first`` or ``mean``.
    """

    def __init__(self, config, n_embd: int):
        super().__init__()
        self.summary_type = config.summary_type
        self.summary: nn.Module = nn.Identity()
        if config.summary_use_proj:
            out = config.num_labels if config.summary_proj_to_labels and config.num_labels > 0 else n_embd
            self.summary = nn.Linear(n_embd, out)
        self.activation = torch.tanh if config.summary_activation == "tanh" else (lambda x: x)
        self.first_dropout = nn.Dropout(config.summary_first_dropout)
        self.last_dropout = nn.Dropout(config.summary_last_dropout)

    def forward(self, hidden: Tensor, cls_index: Tensor | None = None) -> Tensor:
        # hidden: [..., T, C]; cls_index: [...]
        if self.summary_type == "first":
            picked = hidden[..., 0, :]
        elif self.summary_type == "mean":
            picked = hidden.mean(-2)
        elif self.summary_type == "cls_index" and cls_index is not None:
            index = cls_index[..., None, None].expand(*cls_index.shape, 1, hidden.size(-1))  # [..., 1, C]
            picked = hidden.gather(-2, index).squeeze(-2)  # [..., C]
        else:  # "last", or cls_index without indices
            picked = hidden[..., -1, :]
        return self.last_dropout(self.activation(self.summary(self.first_dropout(picked))))
