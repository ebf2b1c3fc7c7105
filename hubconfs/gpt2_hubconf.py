"""GPT-2 entrypoints: thin factories over ``models.gpt2``."""

from __future__ import annotations

from ..models import (GPT2Config, GPT2DoubleHeadsModel, GPT2ForQuestionAnswering, GPT2ForSequenceClassification,
                      GPT2ForTokenClassification, GPT2LMHeadModel, GPT2Model)
from ..tokenizers import GPT2Tokenizer
from .common import config_entrypoint, fetch_options, model_entrypoint

DEFAULT = "gpt2"


def gpt2Tokenizer(pretrained_model_name_or_path=DEFAULT, *, revision=None, force_download=False, cache_dir=None,
                  local_files_only=False, **settings):
    """GPT-2's byte-level BPE tokenizer (OpenAI's encoder, exactly), for every GPT-2 size.

    Args:
        pretrained_model_name_or_path: a checkpoint name (``gpt2``) or a directory holding
            ``vocab.json`` and ``merges.txt`` (or OpenAI's ``encoder.json`` and ``vocab.bpe``).
        add_prefix_space, errors, pad_token, padding_side, ...: tokenizer settings.
        revision, force_download, cache_dir, local_files_only: where and how the files are
            downloaded, as for the models.
        parse_special_tokens: True makes ``"<|endoftext|>"`` in the text the special token; by
            default it is ordinary text, as in OpenAI's encoder.

    Example::

        import torch
        tokenizer = torch.hub.load('<owner>/<repo>', 'gpt2Tokenizer', 'gpt2', trust_repo=True)
        ids = tokenizer.encode("Hello world")  # [15496, 995]
        assert tokenizer.decode(ids) == "Hello world"
        tokenizer.pad_token = tokenizer.eos_token
        batch = tokenizer(["Hi", "Hello world"], padding=True, padding_side="left", return_tensors="pt")
    """
    return GPT2Tokenizer.from_pretrained(pretrained_model_name_or_path, **settings,
                                         **fetch_options(revision, force_download, cache_dir, local_files_only))


gpt2Config = config_entrypoint(
    "gpt2Config", GPT2Config, DEFAULT,
    "GPT-2's configuration: a preset (gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2), a "
    "checkpoint directory or its ``config.json``; keywords override fields.", """\
        assert (config.n_layer, config.n_embd) == (24, 1024)
        # random weights, nothing downloaded: gpt2-medium's width, 4 of its 24 layers
        model = torch.hub.load('<owner>/<repo>', 'gpt2LMHeadModel', config=config, n_layer=4, pretrained=False,
                               trust_repo=True)
        assert model.config.n_layer == 4 and model.config.n_embd == 1024
""", shown="gpt2-medium")


gpt2Model = model_entrypoint(
    "gpt2Model", GPT2Model, DEFAULT,
    "GPT-2 transformer (no head): hidden states and the key/value cache.", """\
        tokens = torch.tensor([[31373, 995]])  # "hello world"
        with torch.no_grad():
            hidden_states, past = model(tokens)  # [1, 2, 768] and the key/value cache
            next_states, past = model(torch.tensor([[13]]), past=past)
""")


gpt2LMHeadModel = model_entrypoint(
    "gpt2LMHeadModel", GPT2LMHeadModel, DEFAULT,
    "GPT-2 with the language-model head tied to the token embedding (fully pre-trained).", """\
        tokens = torch.tensor([[31373, 995]])  # "hello world"
        with torch.no_grad():
            logits, past = model(tokens)  # logits: [1, 2, 50257]
        next_token = logits[0, -1].argmax().item()
""")


gpt2DoubleHeadsModel = model_entrypoint(
    "gpt2DoubleHeadsModel", GPT2DoubleHeadsModel, DEFAULT,
    "GPT-2 with the language-model head and a multiple-choice head (the latter to be trained).", """\
        choices = torch.tensor([[[31373, 995, 13], [31373, 1545, 13]]])  # [batch, choices, T]
        mc_token_ids = torch.tensor([[2, 2]])  # score each choice at its last token
        with torch.no_grad():
            lm_logits, mc_logits, past = model(choices, mc_token_ids)  # mc_logits: [1, 2]
""")


gpt2ForSequenceClassification = model_entrypoint(
    "gpt2ForSequenceClassification", GPT2ForSequenceClassification, DEFAULT,
    "GPT-2 with a classification head read at each sequence's last real token (to be trained).", """\
        # pass num_labels=... and pad_token_id=50256 to classify padded batches
        with torch.no_grad():
            logits = model(torch.tensor([[31373, 995]])).logits  # [1, num_labels]
""")


gpt2ForTokenClassification = model_entrypoint(
    "gpt2ForTokenClassification", GPT2ForTokenClassification, DEFAULT,
    "GPT-2 with a per-token classification head (to be trained).", """\
        with torch.no_grad():
            logits = model(torch.tensor([[31373, 995]])).logits  # [1, 2, num_labels]
""")


gpt2ForQuestionAnswering = model_entrypoint(
    "gpt2ForQuestionAnswering", GPT2ForQuestionAnswering, DEFAULT,
    "GPT-2 with a span-prediction head for extractive question answering (to be trained).", """\
        with torch.no_grad():
            out = model(torch.tensor([[31373, 995]]))
        start, end = out.start_logits.argmax(-1), out.end_logits.argmax(-1)
""")
