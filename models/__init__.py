"""Model code: configs, the GPT and GPT-2 families, task heads, checkpoint I/O and outputs."""

from .checkpoint import CheckpointError, UnsafeCheckpointError
from .config import GPT2Config, OpenAIGPTConfig
from .config_base import ConfigError, PretrainedConfig
from .gpt2 import (GPT2_PRETRAINED_CONFIG_ARCHIVE_MAP, GPT2_PRETRAINED_MODEL_ARCHIVE_MAP, GPT2DoubleHeadsModel, GPT2ForQuestionAnswering, GPT2ForSequenceClassification,
                   GPT2ForTokenClassification, GPT2LMHeadModel, GPT2Model, GPT2PreTrainedModel)
from .openai_gpt import (OPENAI_GPT_PRETRAINED_CONFIG_ARCHIVE_MAP, OPENAI_GPT_PRETRAINED_MODEL_ARCHIVE_MAP,
                         OpenAIGPTDoubleHeadsModel, OpenAIGPTForSequenceClassification, OpenAIGPTLMHeadModel,
                         OpenAIGPTModel, OpenAIGPTPreTrainedModel)
from .openai_release import OriginalReleaseError, load_tf_weights_in_gpt2, load_tf_weights_in_openai_gpt
from .pretrained import PreTrainedModel

__all__ = [
    "CheckpointError", "UnsafeCheckpointError", "ConfigError", "GPT2Config", "PretrainedConfig",
    "GPT2Model", "GPT2LMHeadModel", "GPT2DoubleHeadsModel", "GPT2ForSequenceClassification",
    "GPT2ForTokenClassification", "GPT2ForQuestionAnswering", "GPT2PreTrainedModel", "PreTrainedModel",
    "OpenAIGPTConfig", "OpenAIGPTModel", "OpenAIGPTLMHeadModel", "OpenAIGPTDoubleHeadsModel",
    "OpenAIGPTForSequenceClassification", "OpenAIGPTPreTrainedModel", "GPT2_PRETRAINED_MODEL_ARCHIVE_MAP",
    "GPT2_PRETRAINED_CONFIG_ARCHIVE_MAP", "OPENAI_GPT_PRETRAINED_MODEL_ARCHIVE_MAP", "OPENAI_GPT_PRETRAINED_CONFIG_ARCHIVE_MAP",
    "OriginalReleaseError", "load_tf_weights_in_gpt2", "load_tf_weights_in_openai_gpt",
]
