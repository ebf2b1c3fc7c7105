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
from .layers import Block, CausalSelfAttention, LayerNorm, MLP, attention_scale
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
        self.ln_1 = LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config.n_embd, config.n_head, config.attn_pdrop, config.resid_pdrop,
                                        scale, upcast=config.reorder_and_upcast_attn)
        self.ln_2 = LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
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
    final_norm = True


# The heads, each a class named after its family (GPT2LMHeadModel, ...).
GPT2LMHeadModel = LMHeadModel.on(GPT2Model, "GPT-2 with the language-model head, tied to the token embedding.")
GPT2DoubleHeadsModel = DoubleHeadsModel.on(GPT2Model, "GPT-2 with the LM head and a multiple-choice head to train.")
GPT2ForSequenceClassification = ForSequenceClassification.on(GPT2Model, "GPT-2 classifying each sequence.")
GPT2ForTokenClassification = ForTokenClassification.on(GPT2Model, "GPT-2 labelling every token.")
GPT2ForQuestionAnswering = ForQuestionAnswering.on(GPT2Model, "GPT-2 predicting the start and end of an answer span.")
