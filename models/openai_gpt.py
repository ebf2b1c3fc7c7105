"""OpenAI GPT (Radford et al., 2018): a post-LayerNorm decoder-only transformer.

Parameter names follow the published checkpoint (``tokens_embed``, ``positions_embed``,
``h.0.attn.c_attn``, ``h.0.ln_1``, ...). Unlike Hugging Face's, this GPT has a key/value cache, so
generating a token costs one position, not the whole prefix again.
"""

from __future__ import annotations

from torch import nn

from ..download.names import HUB_REPOS, hub_url
from .config import OpenAIGPTConfig
from .decoder import DecoderModel
from .heads import DoubleHeadsModel, ForSequenceClassification, LMHeadModel
from .layers import MLP, Block, CausalSelfAttention, attention_scale, embedding
from .pretrained import PreTrainedModel


OPENAI_GPT_PRETRAINED_MODEL_ARCHIVE_MAP = {"openai-gpt": hub_url(HUB_REPOS["openai-gpt"], "model.safetensors")}
OPENAI_GPT_PRETRAINED_CONFIG_ARCHIVE_MAP = {"openai-gpt": hub_url(HUB_REPOS["openai-gpt"], "config.json")}


class OpenAIGPTBlock(Block):
    """Attention and feed-forward, each followed by its residual sum and then LayerNorm."""

    pre_norm = False

    def __init__(self, config: OpenAIGPTConfig):
        super().__init__()
        scale = attention_scale(config.n_embd // config.n_head)
        self.attn = CausalSelfAttention(config.n_embd, config.n_head, config.attn_pdrop, config.resid_pdrop, scale)
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config.n_embd, config.inner_dim, config.activation_function, config.resid_pdrop)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)


class OpenAIGPTPreTrainedModel(PreTrainedModel):
    config_class = OpenAIGPTConfig

    def set_num_special_tokens(self, num_special_tokens: int) -> None:
        """Make room for the fine-tuning tokens the GPT paper appends after its 40478 BPE tokens
        (start, delimiter, classify): the embedding grows to 40478 + ``num_special_tokens`` rows,
        keeping the pretrained ones, and the tied head follows."""
        self.resize_token_embeddings(OpenAIGPTConfig.vocab_size + num_special_tokens)


class OpenAIGPTModel(DecoderModel, OpenAIGPTPreTrainedModel):
    """The GPT transformer: token and position embeddings, then ``n_layer`` post-LayerNorm blocks
    (no final LayerNorm). ``forward`` is ``DecoderModel.forward``."""

    token_embedding_name = "tokens_embed"
    position_embedding_name = "positions_embed"
    block_class = OpenAIGPTBlock

    def __init__(self, config: OpenAIGPTConfig):
        super().__init__(config)
        self.tokens_embed = embedding(config.vocab_size, config.n_embd)
        self.positions_embed = embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(OpenAIGPTBlock(config) for _ in range(config.n_layer))
        self.post_init()


class OpenAIGPTLMHeadModel(LMHeadModel, OpenAIGPTPreTrainedModel):
    """GPT with the language-model head, tied to the token embedding."""

    base_model_class = OpenAIGPTModel


class OpenAIGPTDoubleHeadsModel(DoubleHeadsModel, OpenAIGPTPreTrainedModel):
    """GPT with the language-model head and a multiple-choice head (to be fine-tuned)."""

    base_model_class = OpenAIGPTModel


class OpenAIGPTForSequenceClassification(ForSequenceClassification, OpenAIGPTPreTrainedModel):
    """GPT classifying each sequence by its last token that is not padding."""

    base_model_class = OpenAIGPTModel
