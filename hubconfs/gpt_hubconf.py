"""OpenAI GPT (GPT-1) entrypoints: thin factories over ``models`` and ``tokenizers``."""

from __future__ import annotations

from ..models import (OpenAIGPTConfig, OpenAIGPTDoubleHeadsModel, OpenAIGPTForSequenceClassification,
                      OpenAIGPTLMHeadModel, OpenAIGPTModel)
from ..tokenizers import OpenAIGPTTokenizer
from .common import config_entrypoint, fetch_options, model_entrypoint

DEFAULT = "openai-gpt"


def openAIGPTTokenizer(pretrained_model_name_or_path=DEFAULT, *, revision=None, force_download=False, cache_dir=None,
                       local_files_only=False, **settings):
    """OpenAI GPT's tokenizer: the original ftfy + spaCy + lowercased BPE pipeline, exactly.

    Needs ``pip install ftfy spacy`` for the original pipeline (no spaCy model download: a blank
    English tokenizer is what the original used); without them a basic tokenizer stands in,
    with a warning.

    Args:
        pretrained_model_name_or_path: a checkpoint name (``openai-gpt``) or a directory holding
            ``vocab.json`` and ``merges.txt`` (or OpenAI's ``encoder_bpe_40000.json`` and
            ``vocab_40000.bpe``).
        revision, force_download, cache_dir, local_files_only: where and how the files are
            downloaded, as for the models.
        use_spacy: False forces the basic tokenizer.
        parse_special_tokens: True matches special tokens written in the text (the ones below);
            by default text from a user is ordinary text (per call too: ``encode(text,
            parse_special_tokens=True)``).

    Example::

        import torch
        tokenizer = torch.hub.load('<owner>/<repo>', 'openAIGPTTokenizer', 'openai-gpt', trust_repo=True)
        tokens = tokenizer.tokenize("Who was Jim Henson ? Jim Henson was a puppeteer")
        # ['who</w>', 'was</w>', 'jim</w>', 'hen', 'son</w>', '?</w>', ...]
        ids = tokenizer.convert_tokens_to_ids(tokens)
        # the GPT paper's fine-tuning tokens, after the 40478 BPE tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": ["_start_", "_delimiter_", "_classify_"]})
        ids = tokenizer.encode("_start_ a story _classify_", parse_special_tokens=True)  # [40478, ..., 40480]
    """
    return OpenAIGPTTokenizer.from_pretrained(pretrained_model_name_or_path, **settings,
                                              **fetch_options(revision, force_download, cache_dir, local_files_only))


openAIGPTConfig = config_entrypoint(
    "openAIGPTConfig", OpenAIGPTConfig, DEFAULT,
    "OpenAI GPT's configuration: the ``openai-gpt`` preset, a checkpoint directory or its "
    "``config.json``; keywords override fields.", """\
        assert (config.n_layer, config.n_positions, config.vocab_size) == (12, 512, 40478)
""")


openAIGPTModel = model_entrypoint(
    "openAIGPTModel", OpenAIGPTModel, DEFAULT,
    "OpenAI GPT transformer (no head): hidden states and the key/value cache.", """\
        tokens = torch.tensor([[3570, 1473, 2203]])
        with torch.no_grad():
            hidden_states, past = model(tokens)  # [1, 3, 768] and the key/value cache
""")


openAIGPTLMHeadModel = model_entrypoint(
    "openAIGPTLMHeadModel", OpenAIGPTLMHeadModel, DEFAULT,
    "OpenAI GPT with the language-model head tied to the token embedding (fully pre-trained).", """\
        tokens = torch.tensor([[3570, 1473, 2203]])
        with torch.no_grad():
            predictions = model(tokens)
        predicted_index = torch.argmax(predictions[0, -1, :]).item()  # as on the 2019 hub page
""")


openAIGPTDoubleHeadsModel = model_entrypoint(
    "openAIGPTDoubleHeadsModel", OpenAIGPTDoubleHeadsModel, DEFAULT,
    "OpenAI GPT with the language-model head and a multiple-choice head (the latter to be trained).", """\
        model.set_num_special_tokens(3)  # start, delimiter, classify: ids 40478-40480
        choices = torch.tensor([[[40478, 3570, 40479, 1473, 40480], [40478, 3570, 40479, 2203, 40480]]])
        mc_token_ids = torch.tensor([[4, 4]])  # the classify token of each choice
        with torch.no_grad():
            lm_logits, mc_logits, past = model(choices, mc_token_ids)  # mc_logits: [1, 2]
""")


openAIGPTForSequenceClassification = model_entrypoint(
    "openAIGPTForSequenceClassification", OpenAIGPTForSequenceClassification, DEFAULT,
    "OpenAI GPT with a classification head read at each sequence's last real token (to be trained).", """\
        tokens = torch.tensor([[3570, 1473, 2203]])  # pass num_labels=... for more than 2 labels
        label_logits = model(tokens).logits  # [1, 2], to be trained (model.train(), a loss, an optimizer)
""")
