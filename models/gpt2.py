"""GPT-2 (Radford et al., 2019): a pre-LayerNorm decoder-only transformer.

Parameter names follow the published checkpoints (``wte``, ``h.0.attn.c_attn``, ...), so the
files of Hugging Face's hub and of OpenAI load without renaming.
"""

from __future__ import annotations

import math

from torch import nn

from ..download.names import HUB_REPOS, hub_url
from .config import GPT2Config
from .decoder import DecoderModel
from .heads import (DoubleHeadsModel, ForQuestionAnswering, ForSequenceClassification,
                    ForTokenClassification, LMHeadModel)
from .layers import MLP, Block, CausalSelfAttention, attention_scale, embedding
from .pretrained import PreTrainedModel


# Where each published checkpoint's files are (the 2019 names, today's hub repositories), at the
# endpoint in force at import; downloads read HF_ENDPOINT when they happen.
GPT2_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2")
GPT2_PRETRAINED_MODEL_ARCHIVE_MAP = {name: hub_url(HUB_REPOS[name], "model.safetensors") for name in GPT2_NAMES}
GPT2_PRETRAINED_CONFIG_ARCHIVE_MAP = {name: hub_url(HUB_REPOS[name], "config.json") for name in GPT2_NAMES}


class GPT2Block(Block):
    """LayerNorm, then attention or feed-forward, then the residual sum."""

    pre_norm = True

    def __init__(self, config: GPT2Config, layer_idx: int):
        super().__init__()
        head_dim = config.n_embd // config.n_head
        scale = attention_scale(head_dim, config.scale_attn_weights,
                                layer_idx if config.scale_attn_by_inverse_layer_idx else None)
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config.n_embd, config.n_head, config.attn_pdrop, config.resid_pdrop,
                                        scale, upcast=config.reorder_and_upcast_attn)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config.n_embd, config.inner_dim, config.activation_function, config.resid_pdrop)


class GPT2PreTrainedModel(PreTrainedModel):
    config_class = GPT2Config

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, (CausalSelfAttention, MLP)):
            # GPT-2's scheme: residual projections scaled by 1/sqrt(number of residual layers).
            std = self.config.initializer_range / math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.c_proj.weight, mean=0.0, std=std)


class GPT2Model(DecoderModel, GPT2PreTrainedModel):
    """The GPT-2 transformer: token and position embeddings, ``n_layer`` pre-LayerNorm blocks, a
    final LayerNorm. ``forward`` is ``DecoderModel.forward``."""

    block_class = GPT2Block

    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self.wte = embedding(config.vocab_size, config.n_embd)
        self.wpe = embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(GPT2Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.post_init()


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
