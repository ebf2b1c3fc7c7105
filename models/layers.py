"""The modules GPT and GPT-2 are built of. Each ``forward`` runs models/functional.py with its
submodules as the parts; each ``bind`` returns the same function with the parameters bound to
their product kernels, for generate's decoding loop."""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import functional
from .kernels import bind, linear, native_one_row, native_route
from .packed_weights import drop_stale
from .native.block import BlockStep, native_block
from .native.norm import native_norm


class ConvertedWhole(nn.Module):
    """A module whose ``to``, ``half()``, ``cuda()``... is refused before anything in it converts
    where a part cannot take it (a quantized layer's ``check_conversion``: models/quantize.py),
    and which then drops the copies kept of its weights for CPU kernels that no longer match
    them (models/packed_weights.py)."""

    def _apply(self, fn, recurse: bool = True):
        for part in self.modules() if recurse else ():
            check = getattr(part, "check_conversion", None)
            if check is not None:
                check(fn)
        result = super()._apply(fn, recurse)
        drop_stale(self.parameters())
        return result


class Conv1D(nn.Module):
    """A linear layer whose weight is stored ``[in_features, out_features]``: ``y = x @ W + b``.

    OpenAI's TensorFlow checkpoints stored their projections this way (as 1x1 convolutions, hence
    the name every GPT checkpoint uses), so keeping the layout lets checkpoints load without a
    transpose. Its parameters are left uninitialised here: the model initialises every weight.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.empty(out_features))

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias, stored_in_out=True)

    def bind(self) -> functional.Step:
        return bind(self.weight, self.bias, stored_in_out=True)

    def native_one_row(self):
        return native_one_row(self.weight, self.bias, stored_in_out=True)


class Linear(nn.Linear):
    """``nn.Linear`` whose product goes through models/kernels.py."""

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:  # a model built on the meta device is loaded, not initialised
            super().reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias, stored_in_out=False)

    def bind(self) -> functional.Step:
        return bind(self.weight, self.bias, stored_in_out=False)

    def native_one_row(self):
        return native_one_row(self.weight, self.bias, stored_in_out=False)

    def native_route(self):
        return native_route(self.weight, self.bias, stored_in_out=False)


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` that skips its default initialisation on the meta device: loading builds
    the model there and assigns the checkpoint's tensors, so initialising shapes without memory
    is work thrown away."""

    def reset_parameters(self) -> None:
        if self.weight is None or not self.weight.is_meta:
            super().reset_parameters()


def embedding(num_embeddings: int, embedding_dim: int) -> nn.Embedding:
    """An ``nn.Embedding`` whose table is left uninitialised (the model initialises it). Its
    default initialisation would also make torch import its compiler stack when the model is
    built on the meta device, as loading does."""
    return nn.Embedding(num_embeddings, embedding_dim, _weight=torch.empty(num_embeddings, embedding_dim))


def embedding_step(table: nn.Embedding) -> functional.Step:
    """``table``'s forward with its parameters bound."""
    return partial(F.embedding, weight=table.weight, padding_idx=table.padding_idx, max_norm=table.max_norm,
                   norm_type=table.norm_type, scale_grad_by_freq=table.scale_grad_by_freq, sparse=table.sparse)


def layer_norm_step(norm: nn.LayerNorm) -> functional.Step:
    """``norm``'s forward with its parameters bound."""
    return partial(F.layer_norm, normalized_shape=norm.normalized_shape, weight=norm.weight, bias=norm.bias,
                   eps=norm.eps)


def final_norm_step(norm: nn.LayerNorm) -> functional.Step:
    """``layer_norm_step`` for a decoder's final norm: one row through C where it can be
    (models/native/norm.py), as generate's greedy steps run it."""
    return native_norm(norm, layer_norm_step(norm))


def activation(name: str) -> functional.Step:
    """The feed-forward non-linearity named by a config (``gelu_new`` is GPT's tanh approximation)."""
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return partial(F.gelu, approximate="tanh")
    return {"gelu": F.gelu, "relu": F.relu, "silu": F.silu, "swish": F.silu, "tanh": torch.tanh}[name]


def attention_scale(head_dim: int, scale_weights: bool = True, layer_idx: int | None = None) -> float:
    scale = 1.0 / math.sqrt(head_dim) if scale_weights else 1.0
    return scale / (layer_idx + 1) if layer_idx is not None else scale


class MLP(nn.Module):
    """The feed-forward half of a block: widen, non-linearity, narrow, dropout."""

    def __init__(self, n_embd: int, inner_dim: int, activation_name: str, pdrop: float):
        super().__init__()
        self.c_fc = Conv1D(n_embd, inner_dim)
        self.c_proj = Conv1D(inner_dim, n_embd)
        self.activation_name = activation_name
        self.act = self._named_act = activation(activation_name)
        self.dropout = nn.Dropout(pdrop)

    def forward(self, x: Tensor) -> Tensor:
        return functional.feed_forward(x, up=self.c_fc, act=self.act, down=self.c_proj,
                                       dropout=self.dropout if self.training else None)

    def bind(self) -> functional.Step:
        return partial(functional.feed_forward, up=self.c_fc.bind(), act=self.act, down=self.c_proj.bind())

    def named_activation(self) -> str | None:
        """The non-linearity's name, while ``act`` is still the one it names (not replaced since)."""
        return self.activation_name if self.act is self._named_act else None


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

    def forward(self, x: Tensor, mask: Tensor | None, layer_past=None, use_cache: bool = False,
                head_mask: Tensor | None = None, output_attentions: bool = False):
        training = self.training
        return functional.attention(x, mask, layer_past, use_cache, head_mask, output_attentions, qkv=self.c_attn,
                                    proj=self.c_proj, n_head=self.n_head, scale=self.scale, upcast=self.upcast,
                                    attn_dropout=self.attn_dropout if training else None,
                                    resid_dropout=self.resid_dropout if training else None)

    def bind(self):
        return partial(functional.attention, qkv=self.c_attn.bind(), proj=self.c_proj.bind(), n_head=self.n_head,
                       scale=self.scale, upcast=self.upcast)


class Block(ConvertedWhole):
    """A transformer block: attention and feed-forward, each with its residual sum and
    LayerNorm. Families set ``pre_norm`` (GPT-2 normalises first, GPT last) and build the parts
    ``ln_1``, ``attn``, ``ln_2``, ``mlp`` in their checkpoints' order."""

    pre_norm: bool

    def forward(self, x: Tensor, mask: Tensor | None, layer_past=None, use_cache: bool = False,
                head_mask: Tensor | None = None, output_attentions: bool = False):
        return functional.block(x, mask, layer_past, use_cache, head_mask, output_attentions, ln_1=self.ln_1,
                                attn=self.attn, ln_2=self.ln_2, mlp=self.mlp, pre_norm=self.pre_norm)

    def bind(self):
        """The block's step for generate: ``functional.block`` with bound parts, and for one new token
        of one sequence the whole block in one native call (models/native/block.py)."""
        python = partial(functional.block, ln_1=layer_norm_step(self.ln_1), attn=self.attn.bind(),
                         ln_2=layer_norm_step(self.ln_2), mlp=self.mlp.bind(), pre_norm=self.pre_norm)
        return BlockStep(python, self._native_step)

    def _native_step(self):
        attn, mlp = self.attn, self.mlp
        products = [layer.native_one_row() for layer in (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj)]
        norms = [(norm.weight, norm.bias, norm.eps) for norm in (self.ln_1, self.ln_2)]
        return native_block(products, norms, attn.n_head, attn.scale, self.pre_norm, mlp.named_activation())
