"""The forward pass generate() runs, as plain calls instead of a tree of modules.

Generating runs the model once per token. On the benchmark CPU a GPT-2 small step in bfloat16
takes 10-15 ms, most of it in matrix products. Each product streams megabytes of weights
through the caches and leaves Python's own data cold, so the ~110 module calls, the products'
routing checks and the forward's argument handling of a step cost about 1.5 ms more (measured
paired in one process: the modules' path took 9-14% longer).

So when a model is built of this repository's layers only, in eval mode and without hooks,
generate() binds each layer's parameters and product kernel once and runs the operations of the
modules' forward, in the same order and with the same shared functions (models/layers.py), as
plain calls. The tests check that the logits are bit-identical to the modules'. Anything else (a
hook, a replaced or subclassed layer such as a LoRA wrapper or a parametrization, training mode,
upcast attention, parameters of mixed dtypes or devices) runs the modules.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

from .kv_cache import StaticKVCache
from .layers import MLP, CausalSelfAttention, Conv1D, attend, masks_and_positions, merge_heads, split_heads
from .matmul import Linear, bind

Step = Callable[[Tensor], Tensor]


class DirectBlock:
    """One block's operations, its parameters bound. ``pre_norm``: GPT-2's order (normalise,
    then add the residual); otherwise GPT's (add, then normalise)."""

    def __init__(self, block: nn.Module, pre_norm: bool):
        attn, mlp = block.attn, block.mlp
        self.pre_norm = pre_norm
        self.ln_1, self.ln_2 = _layer_norm(block.ln_1), _layer_norm(block.ln_2)
        self.attn_in, self.attn_out = _product(attn.c_attn), _product(attn.c_proj)
        self.mlp_in, self.mlp_out, self.act = _product(mlp.c_fc), _product(mlp.c_proj), mlp.act
        self.n_head, self.scale = attn.n_head, attn.scale

    def attention(self, x: Tensor, batch: int, length: int, mask: Tensor | None, cache) -> Tensor:
        qkv = split_heads(self.attn_in(x), batch, length, self.n_head)  # [3, B, H, T, D]
        k, v = cache.append(qkv[1:])  # each [B, H, S, D]
        y = attend(qkv[0], k, v, mask, self.scale).to(x.dtype)  # [B, H, T, D]
        return self.attn_out(merge_heads(y).view(batch * length, -1))  # [B * T, C]

    def __call__(self, x: Tensor, batch: int, length: int, mask: Tensor | None, cache) -> Tensor:
        # x: [B * T, C]
        if self.pre_norm:
            x = x + self.attention(self.ln_1(x), batch, length, mask, cache)
            return x + self.mlp_out(self.act(self.mlp_in(self.ln_2(x))))
        x = self.ln_1(x + self.attention(x, batch, length, mask, cache))
        return self.ln_2(x + self.mlp_out(self.act(self.mlp_in(x))))


class DirectForward:
    """``last_logits(input_ids, cache, attention_mask)``: what ``lm_head(transformer(...))[:, -1]``
    gives, for a model that ``for_model`` accepts."""

    def __init__(self, model: nn.Module, pre_norm: bool):
        body = model.transformer
        self.tokens = body.get_input_embeddings().weight
        self.positions = getattr(body, body.position_embedding_name).weight
        self.blocks = [DirectBlock(block, pre_norm) for block in body.h]
        self.final_norm = _layer_norm(body.ln_f) if hasattr(body, "ln_f") else None
        self.head = _product(model.lm_head)

    @classmethod
    def for_model(cls, model: nn.Module) -> DirectForward | None:
        """The direct forward of ``model``, or None where only its modules can say what it does."""
        from .gpt2 import GPT2Block, GPT2Model
        from .openai_gpt import OpenAIGPTBlock, OpenAIGPTModel

        body = getattr(model, "transformer", None)
        block_class = {GPT2Model: GPT2Block, OpenAIGPTModel: OpenAIGPTBlock}.get(type(body))
        if block_class is None or type(getattr(model, "lm_head", None)) is not Linear:
            return None
        try:
            expected = _expected_classes(body, block_class)
        except AttributeError:  # a layer replaced by one without the usual parts
            return None
        return cls(model, pre_norm=block_class is GPT2Block) if _plain(model, expected) else None

    def last_logits(self, input_ids: Tensor, cache: StaticKVCache, attention_mask: Tensor | None) -> Tensor:
        batch, length = input_ids.shape
        mask, position_ids = masks_and_positions(attention_mask, None, batch, length, cache.length, input_ids.device)
        x = F.embedding(input_ids, self.tokens) + F.embedding(position_ids, self.positions)  # [B, T, C]
        x = x.view(batch * length, -1)  # [B * T, C]
        for block, layer_cache in zip(self.blocks, cache.layers):
            x = block(x, batch, length, mask, layer_cache)
        cache.length += length
        last = x.view(batch, length, -1)[:, -1]  # [B, C]
        if self.final_norm is not None:
            last = self.final_norm(last)
        return self.head(last)  # [B, V]


def _layer_norm(norm: nn.LayerNorm) -> Step:
    return partial(F.layer_norm, normalized_shape=norm.normalized_shape, weight=norm.weight, bias=norm.bias,
                   eps=norm.eps)


def _product(layer: nn.Module) -> Step:
    return bind(layer.weight, layer.bias, stored_in_out=isinstance(layer, Conv1D))


def _expected_classes(body: nn.Module, block_class: type) -> dict[nn.Module, type]:
    """The class each module inside ``body`` must have for the direct forward to stand in for it."""
    expected = {body.get_input_embeddings(): nn.Embedding, getattr(body, body.position_embedding_name): nn.Embedding,
                body.drop: nn.Dropout, body.h: nn.ModuleList}
    if hasattr(body, "ln_f"):
        expected[body.ln_f] = nn.LayerNorm
    for block in body.h:
        attn, mlp = block.attn, block.mlp
        expected.update({block: block_class, block.ln_1: nn.LayerNorm, block.ln_2: nn.LayerNorm,
                         attn: CausalSelfAttention, attn.c_attn: Conv1D, attn.c_proj: Conv1D,
                         attn.attn_dropout: nn.Dropout, attn.resid_dropout: nn.Dropout,
                         mlp: MLP, mlp.c_fc: Conv1D, mlp.c_proj: Conv1D, mlp.dropout: nn.Dropout})
    return expected


def _plain(model: nn.Module, expected: dict[nn.Module, type]) -> bool:
    """Every module inside the body of exactly the expected class (nothing else there); no
    forward replaced on an instance, no forward hooks, eval mode throughout; embeddings that do
    not renormalise; attention not upcast; parameters of one dtype and device."""
    if any(getattr(nn.modules.module, name, None) for name in ("_global_forward_hooks", "_global_forward_pre_hooks")):
        return False
    inside = list(model.transformer.modules())[1:]
    if any(type(module) is not expected.get(module) for module in inside):
        return False
    for module in (model, model.transformer, model.lm_head, *inside):
        if module.training or module._forward_hooks or module._forward_pre_hooks or "forward" in vars(module):
            return False
    if any(getattr(module, "max_norm", None) is not None or getattr(module, "upcast", False) for module in inside):
        return False
    return len({(p.dtype, p.device) for p in model.parameters()}) == 1
