"""OpenAI GPT (Radford et al., 2018): a post-LayerNorm decoder-only transformer.

Parameter names follow the published checkpoint (``tokens_embed``, ``positions_embed``,
``h.0.attn.c_attn``, ``h.0.ln_1``, ...). Unlike Hugging Face's, this GPT has a key/value cache, so
generating a token costs one position, not the whole prefix again.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..download.names import HUB_REPOS, hub_url
from .config import OpenAIGPTConfig
from .decoder import DecoderModel
from .heads import DoubleHeadsModel, ForSequenceClassification, LMHeadModel
from .layers import MLP, CausalSelfAttention, attention_scale
from .pretrained import PreTrainedModel


OPENAI_GPT_PRETRAINED_MODEL_ARCHIVE_MAP = {"openai-gpt": hub_url(HUB_REPOS["openai-gpt"], "model.safetensors")}
OPENAI_GPT_PRETRAINED_CONFIG_ARCHIVE_MAP = {"openai-gpt": hub_url(HUB_REPOS["openai-gpt"], "config.json")}


class OpenAIGPTBlock(nn.Module):
    """Attention and feed-forward, each followed by its residual sum and then LayerNorm."""

    def __init__(self, config: OpenAIGPTConfig):
        super().__init__()
        scale = attention_scale(config.n_embd // config.n_head)
        self.attn = CausalSelfAttention(config.n_embd, config.n_head, config.attn_pdrop, config.resid_pdrop, scale)
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config.n_embd, config.inner_dim, config.activation_function, config.resid_pdrop)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)

    def forward(self, x: Tensor, mask: Tensor | None, layer_past=None, use_cache: bool = False,
                head_mask: Tensor | None = None, output_attentions: bool = False):
        attended, present, weights = self.attn(x, mask, layer_past, use_cache, head_mask, output_attentions)
        x = self.ln_1(x + attended)
        x = self.ln_2(x + self.mlp(x))
        return x, present, weights


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

    def __init__(self, config: OpenAIGPTConfig):
        super().__init__(config)
        self.tokens_embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.positions_embed = nn.Embedding(config.n_positions, config.n_embd)
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
