"""The byte-pair-encoding tokenizers of GPT and GPT-2."""

from .base import BatchEncoding, PreTrainedTokenizer
from .gpt2 import GPT2Tokenizer

__all__ = ["BatchEncoding", "PreTrainedTokenizer", "GPT2Tokenizer"]
