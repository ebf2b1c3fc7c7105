"""GPT's and GPT-2's configurations: the fields and defaults of each family (models/config_base.py
holds what every configuration shares)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .config_base import ConfigError, PretrainedConfig, check_float, check_int

ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh", "gelu", "relu", "silu", "swish", "tanh")
SUMMARY_TYPES = ("last", "first", "mean", "cls_index")


@dataclass(kw_only=True)
class TransformerShape:
    """The fields, validation and sizes GPT and GPT-2 share (with the defaults both use); the
    vocabulary, positions and activation are declared per family."""

    n_ctx: int | None = None  # legacy twin of n_positions, kept for old config files
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    summary_type: str = "cls_index"
    summary_use_proj: bool = True
    summary_activation: str | None = None
    summary_proj_to_labels: bool = True
    summary_first_dropout: float = 0.1
    summary_last_dropout: float = 0.0

    def validate_transformer(self, activation_field: str) -> None:
        name = type(self).__name__
        for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            check_int(name, key, getattr(self, key))
        check_int(name, "n_inner", getattr(self, "n_inner", None), optional=True)
        check_int(name, "n_ctx", self.n_ctx, optional=True)
        if self.n_embd % self.n_head:
            raise ConfigError(f"{name}.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        for key in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout", "summary_last_dropout"):
            check_float(name, key, getattr(self, key), low=0.0, high=1.0, high_open=True)
        check_float(name, "layer_norm_epsilon", self.layer_norm_epsilon, low=1e-12, high=1.0)
        check_float(name, "initializer_range", self.initializer_range, low=0.0, high=10.0)
        if getattr(self, activation_field) not in ACTIVATIONS:
            raise ConfigError(f"{name}.{activation_field} must be one of {ACTIVATIONS}, got {getattr(self, activation_field)!r}")
        if self.summary_type not in SUMMARY_TYPES:
            raise ConfigError(f"{name}.summary_type must be one of {SUMMARY_TYPES}, got {self.summary_type!r}")
        if self.summary_activation not in (None, "tanh"):
            raise ConfigError(f"{name}.summary_activation must be None or 'tanh', got {self.summary_activation!r}")
        for key in ("summary_use_proj", "summary_proj_to_labels"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{name}.{key} must be a bool, got {getattr(self, key)!r}")

    @property
    def inner_dim(self) -> int:
        inner = getattr(self, "n_inner", None)
        return inner if inner is not None else 4 * self.n_embd

    def parameter_sizes(self) -> dict[str, int]:
        """Parameter counts by the fields that drive them, for the memory check before allocating."""
        e, inner = self.n_embd, self.inner_dim
        attention_and_norms = 4 * e + (3 * e * e + 3 * e) + (e * e + e)
        feed_forward = 2 * (e * inner) + inner + e
        sizes = {"vocab_size": self.vocab_size * e, "n_positions": self.n_positions * e,
                 "num_labels": self.num_labels * e}  # a classification head's widest form
        if getattr(self, "n_inner", None) is not None:  # an explicit width: blame it for its part
            return {**sizes, "n_layer": self.n_layer * attention_and_norms, "n_inner": self.n_layer * feed_forward}
        return {**sizes, "n_layer": self.n_layer * (attention_and_norms + feed_forward)}

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["n_ctx"] = self.n_ctx if self.n_ctx is not None else self.n_positions
        return out


@dataclass
class GPT2Config(TransformerShape, PretrainedConfig):
    """GPT-2's hyper-parameters, with the defaults of the 124M-parameter ``gpt2``."""

    model_type: ClassVar[str] = "gpt2"

    vocab_size: int = 50257
    n_positions: int = 1024
    n_inner: int | None = None  # feed-forward width; None means 4 * n_embd
    activation_function: str = "gelu_new"
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    reorder_and_upcast_attn: bool = False
    bos_token_id: int | None = 50256
    eos_token_id: int | None = 50256

    def validate(self) -> None:
        super().validate()
        self.validate_transformer("activation_function")
        for key in ("scale_attn_weights", "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{type(self).__name__}.{key} must be a bool, got {getattr(self, key)!r}")

    @classmethod
    def presets(cls) -> dict[str, dict[str, Any]]:
        return GPT2_PRESETS


# The architecture of each published checkpoint (their config.json files, abridged).
GPT2_PRESETS: dict[str, dict[str, Any]] = {
    "gpt2": {"n_embd": 768, "n_layer": 12, "n_head": 12},
    "gpt2-medium": {"n_embd": 1024, "n_layer": 24, "n_head": 16},
    "gpt2-large": {"n_embd": 1280, "n_layer": 36, "n_head": 20},
    "gpt2-xl": {"n_embd": 1600, "n_layer": 48, "n_head": 25},
    "distilgpt2": {"n_embd": 768, "n_layer": 6, "n_head": 12},
}


@dataclass
class OpenAIGPTConfig(TransformerShape, PretrainedConfig):
    """GPT-1's hyper-parameters (``openai-gpt``): post-LayerNorm blocks, a 40478-token vocabulary
    (plus any special tokens added for fine-tuning), 512 positions."""

    model_type: ClassVar[str] = "openai-gpt"

    vocab_size: int = 40478
    n_positions: int = 512
    afn: str = "gelu"  # GPT's GELU is the tanh approximation, as in OpenAI's code
    predict_special_tokens: bool = True

    def validate(self) -> None:
        super().validate()
        self.validate_transformer("afn")

    @property
    def activation_function(self) -> str:
        # OpenAI's "gelu" is the tanh approximation (Hugging Face maps it to gelu_new too).
        return "gelu_new" if self.afn == "gelu" else self.afn

    @classmethod
    def presets(cls) -> dict[str, dict[str, Any]]:
        return {"openai-gpt": {}}
