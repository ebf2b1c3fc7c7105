"""Model code: configs, the GPT-2 family, task heads, checkpoint I/O and outputs."""

from .checkpoint import CheckpointError, UnsafeCheckpointError
from .config import GPT2Config, PretrainedConfig, ConfigError
from .gpt2 import (GPT2DoubleHeadsModel, GPT2ForQuestionAnswering, GPT2ForSequenceClassification,
                   GPT2ForTokenClassification, GPT2LMHeadModel, GPT2Model, GPT2PreTrainedModel)
from .pretrained import PreTrainedModel

__all__ = [
    "CheckpointError", "UnsafeCheckpointError", "ConfigError", "GPT2Config", "PretrainedConfig",
    "GPT2Model", "GPT2LMHeadModel", "GPT2DoubleHeadsModel", "GPT2ForSequenceClassification",
    "GPT2ForTokenClassification", "GPT2ForQuestionAnswering", "GPT2PreTrainedModel", "PreTrainedModel",
]
