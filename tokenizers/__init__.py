"""The byte-pair-encoding tokenizers of GPT and GPT-2."""

from .base import PreTrainedTokenizer
from .batching import BatchEncoding
from .checks import TokenizerError, TokenizerTypeError
from .gpt2 import GPT2Tokenizer
from .openai_gpt import OpenAIGPTTokenizer

__all__ = ["BatchEncoding", "PreTrainedTokenizer", "GPT2Tokenizer", "OpenAIGPTTokenizer", "TokenizerError",
           "TokenizerTypeError"]
