"""OpenAI GPT (Radford et al., 2018): a post-LayerNorm decoder-only transformer.

Parameter names follow the published checkpoint (``tokens_embed``, ``positions_embed``,
``h.0.attn.c_attn``, ``h.0.ln_1``, ...). Unlike Hugging Face's, this GPT has a key/value cache, so
generating a token costs one position, not the whole prefix again.
"""

from __future__ import annotations


from ..download.names import HUB_REPOS, hub_url
from .config import OpenAIGPTConfig
from .decoder import DecoderModel
from .heads import DoubleHeadsModel, ForSequenceClassification, LMHeadModel
from .layers import Block, CausalSelfAttention, LayerNorm, MLP, attention_scale
from .pretrained import PreTrainedModel


OPENAI_GPT_PRETRAINED_MODEL_ARCHIVE_MAP = {"openai-gpt": hub_url(HUB_REPOS["openai-gpt"], "model.safetensors")}
OPENAI_GPT_PRETRAINED_CONFIG_ARCHIVE_MAP = {"openai-gpt": hub_url(HUB_REPOS["openai-gpt"], "config.json")}


class OpenAIGPTBlock(Block):
    """Attention and feed-forward, each followed by its residual sum and then LayerNorm."""

    pre_norm = False

    def __init__(self, config: OpenAIGPTConfig, layer_idx: int):
        super().__init__()
        scale = attention_scale(config.n_embd // config.n_head)
        self.attn = CausalSelfAttention(config.n_embd, config.n_head, config.attn_pdrop, config.resid_pdrop, scale)
        self.ln_1 = LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config.n_embd, config.inner_dim, config.activation_function, config.resid_pdrop)
        self.ln_2 = LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)


class OpenAIGPTPreTrainedModel(PreTrainedModel):
    config_class = OpenAIGPTConfig

    def set_num_special_tokens(self, num_special_tokens: int) -> None:
        """Make room for the fine-tuning tokens the GPT paper appends after its 40478 BPE tokens
        (start, delimiter, classify): the embedding grows to 40478 + ``num_special_tokens`` rows,
        keeping the pretrained ones, and the tied head follows; the new rows start random, as in
        the 2019 library."""
        self.resize_token_embeddings(OpenAIGPTConfig.vocab_size + num_special_tokens, mean_resizing=False)


class OpenAIGPTModel(DecoderModel, OpenAIGPTPreTrainedModel):
    """The GPT transformer: token and position embeddings, then ``n_layer`` post-LayerNorm blocks
    (no final LayerNorm). ``forward`` is ``DecoderModel.forward``."""

    token_embedding_name = "tokens_embed"
    position_embedding_name = "positions_embed"
    block_class = OpenAIGPTBlock


# The heads, each a class named after its family (OpenAIGPTLMHeadModel, ...).
OpenAIGPTLMHeadModel = LMHeadModel.on(OpenAIGPTModel, "GPT with the language-model head, tied to the token embedding.")
OpenAIGPTDoubleHeadsModel = DoubleHeadsModel.on(OpenAIGPTModel, "GPT with the LM head and a multiple-choice head to train.")
OpenAIGPTForSequenceClassification = ForSequenceClassification.on(OpenAIGPTModel, "GPT classifying each sequence.")
