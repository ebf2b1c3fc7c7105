"""``example``: the hub pages' example (tokenize, hidden states with a cache, the next token, the
multiple-choice head), run through ``torch.hub.load(..., source='local')`` on a local checkpoint:
the user's, or a small random one made on the spot. It needs no network and nothing beside the
clone."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .loading import family_of
from .main import UsageError
from .vocab import write_gpt2_vocabulary, write_openai_gpt_vocabulary

REPO = Path(__file__).resolve().parents[1]
TEXTS = ("Who was Jim Henson ? Jim Henson was a puppeteer", "Who was Jim Henson ? Jim Henson was a mysterious young man")
PREFIX = {"gpt2": "gpt2", "openai-gpt": "openAIGPT"}
OPENAI_NAMES = {"vocab.json": "encoder.json", "merges.txt": "vocab.bpe"}


def copy_vocabulary(folder: Path, vocab: str, family: str) -> None:
    """The real vocabulary files from a folder (Hugging Face's or OpenAI's names) or a checkpoint name."""
    from ..download import resolve_file

    openai = OPENAI_NAMES if family == "gpt2" else {"vocab.json": "encoder_bpe_40000.json",
                                                    "merges.txt": "vocab_40000.bpe"}
    for name, openai_name in openai.items():
        try:
            source = resolve_file(vocab, [name, openai_name])
        except FileNotFoundError:
            raise UsageError(f"--vocab {vocab} holds no {name} (nor OpenAI's {openai_name})") from None
        except ValueError as err:  # not a name, a repository id or a path
            raise UsageError(f"--vocab: {err}") from None
        shutil.copy(source, folder / name)


def build_example_checkpoint(folder: Path, family: str = "gpt2", vocab: str | Path | None = None) -> Path:
    """A 2-layer model of ``family`` with random weights, saved with a vocabulary: the real one
    from ``vocab``, or a small one learned from the example's text."""
    from .. import models

    folder.mkdir(parents=True, exist_ok=True)
    if vocab is not None:
        copy_vocabulary(folder, str(vocab), family)
    elif family == "gpt2":
        write_gpt2_vocabulary(folder, " ".join(TEXTS))
    else:
        write_openai_gpt_vocabulary(folder, " ".join(TEXTS))
    with open(folder / "vocab.json", encoding="utf-8") as f:
        size = len(json.load(f))
    config_class, model_class = ((models.GPT2Config, models.GPT2Model) if family == "gpt2"
                                 else (models.OpenAIGPTConfig, models.OpenAIGPTModel))
    config = config_class(n_layer=2, n_embd=128, n_head=4, vocab_size=size)
    model_class.from_config(config).save_pretrained(folder)  # a base checkpoint, like the real ones
    return folder


def hub_page_example(model: str) -> None:
    """The hub page's steps for the checkpoint's family, printing what each gives."""
    prefix = PREFIX[family_of(model)]

    def load(entry: str):
        return torch.hub.load(str(REPO), prefix + entry, model, source="local")

    tokenizer = load("Tokenizer")
    tokenized = [tokenizer.tokenize(text) for text in TEXTS]
    indexed = [tokenizer.convert_tokens_to_ids(tokens) for tokens in tokenized]
    print("tokens:", tokenized[0])
    with torch.no_grad():
        hidden_1, past = load("Model")(torch.tensor([indexed[0]]))
        hidden_2, past = load("Model")(torch.tensor([indexed[1]]), past=past)
        print(f"{prefix}Model hidden states: {tuple(hidden_1.shape)} then {tuple(hidden_2.shape)}, "
              f"with a cache of {past[0][0].shape[-2]} positions")
        logits, _ = load("LMHeadModel")(torch.tensor([indexed[0]]))
        print(f"{prefix}LMHeadModel next token: {tokenizer.decode([int(logits[0, -1].argmax())])!r}")
        pad = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
        width = max(map(len, indexed))
        choices = torch.tensor([[ids + [pad] * (width - len(ids)) for ids in indexed]])  # [1, 2 choices, width]
        mc_token_ids = torch.tensor([[len(ids) - 1 for ids in indexed]])  # each choice's last real token
        _, mc_logits, _ = load("DoubleHeadsModel")(choices, mc_token_ids)
    print(f"{prefix}DoubleHeadsModel choice logits: {[round(x, 4) for x in mc_logits[0].tolist()]} "
          "(the multiple-choice head is freshly initialised: it has to be trained)")


def run(args) -> None:
    if args.model is not None:
        if not os.path.isdir(args.model):
            raise UsageError(f"--model {args.model} is not a directory")
        hub_page_example(args.model)
        return
    with tempfile.TemporaryDirectory(prefix="gpt-hub-example-") as folder:
        model = build_example_checkpoint(Path(folder), args.family, args.vocab)
        what = "the real" if args.vocab else "a small made-up"
        print(f"(a random 2-layer {args.family} model with {what} vocabulary: the predictions are noise)")
        hub_page_example(str(model))
