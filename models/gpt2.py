"""GPT-2 (Radford et al., 2019): a pre-LayerNorm decoder-only transformer.

Parameter names follow the published checkpoints (``wte``, ``h.0.attn.c_attn``, ...), so the
files of Hugging Face's hub and of OpenAI load without renaming.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .config import GPT2Config
from .heads import (DoubleHeadsModel, ForQuestionAnswering, ForSequenceClassification,
                    ForTokenClassification, LMHeadModel)
from .layers import (CausalSelfAttention, Conv1D, activation, attention_scale, head_mask_per_layer,
                     masks_and_positions, normalize_past, past_length)
from .outputs import BaseModelOutputWithPast
from .pretrained import PreTrainedModel


class GPT2MLP(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        self.c_fc = Conv1D(config.n_embd, config.inner_dim)
        self.c_proj = Conv1D(config.inner_dim, config.n_embd)
        self.act = activation(config.activation_function)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class GPT2Block(nn.Module):
    def __init__(self, config: GPT2Config, layer_idx: int):
        super().__init__()
        head_dim = config.n_embd // config.n_head
        scale = attention_scale(head_dim, config.scale_attn_weights,
                                layer_idx if config.scale_attn_by_inverse_layer_idx else None)
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config.n_embd, config.n_head, config.attn_pdrop, config.resid_pdrop,
                                        scale, upcast=config.reorder_and_upcast_attn)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = GPT2MLP(config)

    def forward(self, x: Tensor, mask: Tensor | None, layer_past=None, use_cache: bool = False,
                head_mask: Tensor | None = None, output_attentions: bool = False):
        attended, present, weights = self.attn(self.ln_1(x), mask, layer_past, use_cache, head_mask, output_attentions)
        x = x + attended
        x = x + self.mlp(self.ln_2(x))
        return x, present, weights


class GPT2PreTrainedModel(PreTrainedModel):
    config_class = GPT2Config

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, Conv1D)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        if isinstance(module, (CausalSelfAttention, GPT2MLP)):
            # GPT-2's scheme: residual projections scaled by 1/sqrt(number of residual layers).
            nn.init.normal_(module.c_proj.weight, mean=0.0, std=std / math.sqrt(2 * self.config.n_layer))


class GPT2Model(GPT2PreTrainedModel):
    """The GPT-2 transformer: token and position embeddings, ``n_layer`` blocks, a final LayerNorm."""

    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(GPT2Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.post_init()

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
        """
        config = self.config
        use_cache = config.use_cache if use_cache is None else use_cache
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        if past is not None and past_key_values is not None:
            raise ValueError("give the cache as past or as past_key_values, not both")
        past = normalize_past(past if past is not None else past_key_values, config.n_layer)

        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if input_ids is not None:
            shape = input_ids.shape
            check_token_ids(input_ids, config.vocab_size)
            inputs_embeds = self.wte(input_ids.reshape(-1, shape[-1]))  # [B, T, C]
        else:
            shape = inputs_embeds.shape[:-1]
            inputs_embeds = inputs_embeds.reshape(-1, *inputs_embeds.shape[-2:])  # [B, T, C]
        batch, length = inputs_embeds.shape[:2]
        past_len = past_length(past)
        if past_len + length > config.n_positions:
            raise ValueError(f"{past_len} past plus {length} new positions exceed n_positions={config.n_positions}")
        mask, position_ids = masks_and_positions(attention_mask, position_ids, batch, length, past_len,
                                                 inputs_embeds.device)
        x = inputs_embeds + self.wpe(position_ids)
        if token_type_ids is not None:
            x = x + self.wte(token_type_ids.reshape(-1, length))
        x = self.drop(x)  # [B, T, C]

        head_masks = head_mask_per_layer(None if head_mask is None else head_mask.to(x.dtype), config.n_layer)
        presents, hidden_states, attentions = [], [], []
        for i, block in enumerate(self.h):
            if output_hidden_states:
                hidden_states.append(x.view(*shape, -1))
            x, present, weights = block(x, mask, past[i] if past else None, use_cache, head_masks[i], output_attentions)
            presents.append(present)
            attentions.append(weights)
        x = self.ln_f(x).view(*shape, -1)  # [..., T, C]
        if output_hidden_states:
            hidden_states.append(x)

        out = BaseModelOutputWithPast(
            last_hidden_state=x,
            past_key_values=tuple(presents) if use_cache else None,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )
        return out.to_tuple() if return_dict is False else out


def check_token_ids(input_ids: Tensor, vocab_size: int) -> None:
    if input_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"input_ids must be an integer tensor, got {input_ids.dtype}")
    if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab_size):
        raise ValueError(
            f"input_ids must lie in [0, {vocab_size}), got values in "
            f"[{int(input_ids.min())}, {int(input_ids.max())}]"
        )


class GPT2LMHeadModel(LMHeadModel, GPT2PreTrainedModel):
    """GPT-2 with the language-model head, tied to the token embedding."""

    base_model_class = GPT2Model


class GPT2DoubleHeadsModel(DoubleHeadsModel, GPT2PreTrainedModel):
    """GPT-2 with the language-model head and a multiple-choice head (to be fine-tuned)."""

    base_model_class = GPT2Model


class GPT2ForSequenceClassification(ForSequenceClassification, GPT2PreTrainedModel):
    """GPT-2 classifying each sequence by its last token that is not padding."""

    base_model_class = GPT2Model


class GPT2ForTokenClassification(ForTokenClassification, GPT2PreTrainedModel):
    """GPT-2 labelling every token."""

    base_model_class = GPT2Model


class GPT2ForQuestionAnswering(ForQuestionAnswering, GPT2PreTrainedModel):
    """GPT-2 predicting the start and end of an answer span."""

    base_model_class = GPT2Model
