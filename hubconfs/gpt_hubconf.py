"""OpenAI GPT (GPT-1) entrypoints: thin factories over ``models`` and ``tokenizers``."""

from __future__ import annotations

from ..tokenizers import OpenAIGPTTokenizer

DEFAULT = "openai-gpt"


def openAIGPTTokenizer(pretrained_model_name_or_path=DEFAULT, **kwargs):
    """OpenAI GPT's tokenizer: the original ftfy + spaCy + lowercased BPE pipeline, exactly.

    Needs ``pip install ftfy spacy`` for the original pipeline (no spaCy model download: a blank
    English tokenizer is what the original used); without them a basic tokenizer stands in,
    with a warning.

    Args:
        pretrained_model_name_or_path: a checkpoint name (``openai-gpt``) or a directory holding
            ``vocab.json`` and ``merges.txt`` (or OpenAI's ``encoder_bpe_40000.json`` and
            ``vocab_40000.bpe``).
        use_spacy: False forces the basic tokenizer.

    Example::

        import torch
        tokenizer = torch.hub.load('<owner>/<repo>', 'openAIGPTTokenizer', 'openai-gpt', trust_repo=True)
        tokens = tokenizer.tokenize("Who was Jim Henson ? Jim Henson was a puppeteer")
        # ['who</w>', 'was</w>', 'jim</w>', 'hen', 'son</w>', '?</w>', ...]
        ids = tokenizer.convert_tokens_to_ids(tokens)
        # the GPT paper's fine-tuning tokens, after the 40478 BPE tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": ["_start_", "_delimiter_", "_classify_"]})
    """
    return OpenAIGPTTokenizer.from_pretrained(pretrained_model_name_or_path, **kwargs)
