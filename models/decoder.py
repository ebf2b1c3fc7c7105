"""The transformer body GPT and GPT-2 share: embeddings, a stack of blocks with a key/value cache,
padding-aware masks and positions, and the outputs. A family names its embeddings and builds its
blocks; GPT-2 ends with a LayerNorm, GPT does not."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from . import functional
from ..errors import InvalidArgumentError
from .inputs import check_attention_mask, check_not_empty, check_token_ids, head_mask_per_layer
from .kv_cache import LayerCaches, StaticKVCache, is_transformers_cache, normalize_past, past_length
from .layers import (Block, CausalSelfAttention, Conv1D, LayerNorm, Linear, MLP, embedding, embedding_step,
                     final_norm_step)
from .native.decoder import BodyStep, GreedyStep, native_decoder
from .native.norm import NativeNorm
from .native.products import NativeProduct
from .outputs import BaseModelOutputWithPast
from .pretrained import PreTrainedModel
from .quantize import QuantizedLinear

logger = logging.getLogger(__name__)

# What generate may bind: modules of exactly these classes (a subclass, such as a LoRA wrapper,
# may compute something else), besides the body and its block class.
_BINDABLE = (nn.Embedding, nn.Dropout, nn.ModuleList, LayerNorm, CausalSelfAttention, MLP, Conv1D, Linear,
             QuantizedLinear)


def block_runner(body: DecoderModel) -> Callable | None:
    """How the forward calls each block under gradient checkpointing (in training, with
    gradients): through ``torch.utils.checkpoint``, which keeps only the block's input and
    recomputes the rest during backward, with the same dropout. None: as it is."""
    if not (body.gradient_checkpointing and body.training and torch.is_grad_enabled()):
        return None
    if body.checkpoint_reentrant:
        return _reentrant_checkpoint
    return partial(torch.utils.checkpoint.checkpoint, use_reentrant=False)


def _reentrant_checkpoint(block: Block, x: Tensor, *args):
    """The reentrant checkpoint passes gradients to a block's weights only through an input that
    asks for one: with the embeddings frozen (an adapter's fine-tuning) ``x`` does not, and the
    blocks got none (transformers' ``enable_input_require_grads`` does what this does)."""
    if not x.requires_grad:
        x = x.detach().requires_grad_()
    return torch.utils.checkpoint.checkpoint(block, x, *args, use_reentrant=True)


class DecoderModel(PreTrainedModel):
    """Families name their embeddings (as their checkpoints do), give their ``block_class``
    (made as ``block_class(config, layer_idx)``) and say whether a ``final_norm`` (``ln_f``)
    ends the stack."""

    token_embedding_name = "wte"
    position_embedding_name = "wpe"
    block_class: type[Block] = Block
    final_norm = False
    gradient_checkpointing = False  # PreTrainedModel.gradient_checkpointing_enable
    checkpoint_reentrant = False

    def __init__(self, config):
        super().__init__(config)
        setattr(self, self.token_embedding_name, embedding(config.vocab_size, config.n_embd))
        setattr(self, self.position_embedding_name, embedding(config.n_positions, config.n_embd))
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(self.block_class(config, i) for i in range(config.n_layer))
        if self.final_norm:
            self.ln_f = LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return getattr(self, self.token_embedding_name)

    def set_input_embeddings(self, embedding: nn.Embedding) -> None:
        setattr(self, self.token_embedding_name, embedding)

    def forward(
        self,
        input_ids: Tensor | None = None,
        past=None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        head_mask: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        past_key_values=None,
    ) -> BaseModelOutputWithPast:
        """Hidden states of ``input_ids`` (``[..., T]``; extra leading dims, such as the choices of
        a multiple-choice batch, are flattened into the batch and restored on the way out).

        ``past``/``past_key_values`` is the cache a previous call returned; ``attention_mask``
        (1 = token, 0 = padding) covers past and new positions; without ``position_ids`` the
        positions count the unmasked tokens, so left padding does not shift them.
        ``token_type_ids`` are embedded with the token embedding, as in the original models.
        """
        config = self.config
        asked, use_cache = use_cache, config.use_cache if use_cache is None else use_cache
        checkpointed = block_runner(self)
        if checkpointed is not None and use_cache:  # keeping keys and values is what checkpointing saves
            if asked:  # not only the config's default
                logger.warning("use_cache=True does not go with gradient checkpointing: no cache is returned")
            use_cache = False
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        if past is not None and past_key_values is not None:
            raise InvalidArgumentError("give the cache as past or as past_key_values, not both")
        given = past if past is not None else past_key_values
        past = normalize_past(given, config.n_layer)
        tokens = self.get_input_embeddings()

        if (input_ids is None) == (inputs_embeds is None):
            raise InvalidArgumentError("give exactly one of input_ids and inputs_embeds")
        if input_ids is not None:  # token ids, looked up in the token embedding
            input_ids = check_token_ids(input_ids, tokens.num_embeddings)
            shape = check_not_empty(input_ids.shape, "input_ids")
            inputs, embed_inputs = input_ids.reshape(-1, shape[-1]), tokens  # [B, T]
        else:  # embeddings given: used as they are
            shape = check_not_empty(inputs_embeds.shape[:-1], "inputs_embeds")
            inputs, embed_inputs = inputs_embeds.reshape(-1, *inputs_embeds.shape[-2:]), _given  # [B, T, C]
        batch, length = inputs.shape[:2]
        past_len = past_length(past)
        if past_len + length > config.n_positions:
            raise InvalidArgumentError(f"{past_len} past plus {length} new positions exceed "
                                       f"n_positions={config.n_positions}")
        check_attention_mask(attention_mask, batch, past_len, length)
        if token_type_ids is not None:
            token_type_ids = check_token_ids(token_type_ids, tokens.num_embeddings, "token_type_ids")
            if token_type_ids.numel() != batch * length:
                raise InvalidArgumentError(f"token_type_ids has shape {list(token_type_ids.shape)}; it must match "
                                           f"the input's {list(shape)}")
            token_type_ids = token_type_ids.reshape(-1, length)
        if position_ids is not None:
            position_ids = check_token_ids(position_ids, config.n_positions, "position_ids")
            if position_ids.numel() not in (length, batch * length) or position_ids.shape[-1] != length:
                raise InvalidArgumentError(f"position_ids has shape {list(position_ids.shape)}; it must give the "
                                           f"{length} new positions of each row (or of all rows at once)")
        mask, position_ids = functional.masks_and_positions(attention_mask, position_ids, batch, length, past_len,
                                                            tokens.weight.device)

        x = functional.embed(inputs, position_ids, embed_inputs, getattr(self, self.position_embedding_name))
        if token_type_ids is not None:
            x = x + tokens(token_type_ids)
        x = self.drop(x)  # [B, T, C]

        head_masks = head_mask_per_layer(head_mask, config.n_layer, x.dtype)
        presents, hidden_states, attentions = [], [], []
        blocks = self._blocks(x, past)
        for i, block in enumerate(blocks):
            if output_hidden_states:
                hidden_states.append(x.view(*shape, -1))
            args = (x, mask, past[i] if past else None, use_cache, head_masks[i], output_attentions)
            x, present, weights = block(*args) if checkpointed is None else checkpointed(block, *args)
            presents.append(present)
            attentions.append(weights)
        if hasattr(self, "ln_f"):  # after bound steps, the bound final norm, as generate's (native/norm.py)
            x = (self.ln_f if blocks is self.h else final_norm_step(self.ln_f))(x)
        x = x.view(*shape, -1)  # [..., T, C]
        if output_hidden_states:
            hidden_states.append(x)

        if isinstance(past, StaticKVCache):  # every layer wrote its positions
            past.length += length
            cache = past
        elif use_cache and is_transformers_cache(given):  # extended in place, as transformers' models do
            for i, (keys, values) in enumerate(presents):
                given.update(keys[..., past_len:, :], values[..., past_len:, :], i)
            cache = given
        else:
            cache = LayerCaches(presents)
        out = BaseModelOutputWithPast(
            last_hidden_state=x,
            past_key_values=cache if use_cache else None,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )
        return out.to_tuple() if return_dict is False else out

    def _blocks(self, x: Tensor, past) -> list:
        """The blocks to run on ``x`` ``[B, T, C]``: for one new token of one sequence over a
        preallocated cache, their bound steps, as generate runs them (the whole block in one native
        call where it can, models/native/block.py), so that both give the same logits; otherwise
        the modules. Bound only where that computes what the modules do (``bindable``) and no
        gradient is asked, of the parameters or of ``x``."""
        if x.size(0) == 1 and x.size(1) == 1 and isinstance(past, StaticKVCache) and bindable(self, (type(self).block_class,)):
            if not (torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))):
                return [block.bind() for block in self.h]
        return self.h

    def bind(self) -> BoundBody | None:
        """The forward above for generate's decoding loop (``BoundBody``), every parameter bound
        once to its product kernel. None where that would not be what the modules compute: a hook,
        a replaced or subclassed layer, training mode, parameters of mixed dtypes or devices."""
        if not bindable(self, (type(self).block_class,)):
            return None
        tokens = embedding_step(self.get_input_embeddings())
        positions = embedding_step(getattr(self, self.position_embedding_name))
        blocks = [block.bind() for block in self.h]
        final_norm = final_norm_step(self.ln_f) if hasattr(self, "ln_f") else None
        native = BodyStep(partial(native_decoder, self.get_input_embeddings(),
                                  getattr(self, self.position_embedding_name), blocks))
        return BoundBody(tokens, positions, blocks, final_norm, native)


def _given(embeds: Tensor) -> Tensor:
    """The token embedding of ``inputs_embeds``: the embeddings themselves."""
    return embeds


class BoundBody:
    """``DecoderModel.bind``'s step, ``(input_ids [B, T], cache, attention_mask) -> the last
    position's hidden state [B, C]`` (after any final norm): one token of one sequence in one
    native call where it can (native/decoder.py's ``BodyStep``), else the bound embeddings and
    blocks; and ``greedy(head)``, a greedy step that ends with the head."""

    def __init__(self, tokens, positions, blocks: list, final_norm, native: BodyStep):
        self.tokens, self.positions, self.blocks = tokens, positions, blocks
        self.final_norm, self.native = final_norm, native

    def __call__(self, input_ids: Tensor, cache: StaticKVCache, attention_mask: Tensor | None) -> Tensor:
        norm = self.final_norm or (lambda x: x)
        last = self.native(input_ids, cache) if attention_mask is None else None  # one token of one row, in one call
        if last is not None:
            return norm(last)
        batch, length = input_ids.shape
        mask, position_ids = functional.masks_and_positions(attention_mask, None, batch, length, cache.length,
                                                            input_ids.device)
        x = functional.embed(input_ids, position_ids, self.tokens, self.positions)  # [B, T, C]
        for block, layer_cache in zip(self.blocks, cache.layers):
            x = block(x, mask, layer_cache)[0]
        cache.length += length
        return norm(x)[:, -1]  # [B, C]: every row normalised, as the modules' forward does (one row: natively)

    def greedy(self, head: Callable[[], NativeProduct | None]) -> GreedyStep | None:
        """``(input_ids, cache, steps=1) -> the next steps tokens [steps] or None``: the body, its
        final norm, the head (``head()``, asked on the first step: the native product a bound head
        runs for one row, None where it runs another) and the argmax, ``steps`` times in one native
        call; None where the final norm is not native."""
        if not (self.final_norm is None or isinstance(self.final_norm, NativeNorm)):
            return None
        return GreedyStep(self.native, self.final_norm, head)


def bindable_head(head: nn.Module) -> bool:
    """Whether a language-model head can be bound: exactly one of this library's product layers
    (a plain ``nn.Linear`` put in its place has no ``bind``), and ``bindable``."""
    return type(head) in (Linear, QuantizedLinear) and bindable(head)


def bindable(model: nn.Module, also: tuple[type, ...] = ()) -> bool:
    """Whether binding ``model``'s parameters computes what its modules compute: every module
    inside of exactly a known class, no forward hooks (per module or global), no forward replaced
    on an instance, eval mode throughout, parameters (if any: a quantized head has none) of one
    dtype and device."""
    if any(getattr(nn.modules.module, name, None) for name in ("_global_forward_hooks", "_global_forward_pre_hooks")):
        return False
    allowed = (*_BINDABLE, *also)
    for module in model.modules():
        if module is not model and type(module) not in allowed:
            return False
        if module.training or module._forward_hooks or module._forward_pre_hooks or "forward" in vars(module):
            return False
    return len({(p.dtype, p.device) for p in model.parameters()}) <= 1
