"""``python hubconf.py COMMAND``: the repository's command line.

``example`` runs the 2019 GPT-2 hub page's example through ``torch.hub.load`` against a local
checkpoint: yours (``--model DIR``), or a small random one built on the spot with the real
vocabulary (``--vocab DIR``), since pretrained weights need the network.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_VOCAB = REPO.parent / "shared" / "data" / "gpt2"


class UsageError(Exception):
    """A bad command-line argument, reported in one line."""


def build_example_checkpoint(folder: Path, vocab: Path) -> Path:
    """A 2-layer GPT-2 with random weights and the real vocabulary files."""
    from ..models import GPT2Config, GPT2Model

    for name in ("vocab.json", "merges.txt"):
        source = vocab / name if (vocab / name).exists() else vocab / {"vocab.json": "encoder.json", "merges.txt": "vocab.bpe"}[name]
        if not source.exists():
            raise UsageError(f"--vocab {vocab} holds no {name} (nor OpenAI's encoder.json/vocab.bpe)")
        shutil.copy(source, folder / name)
    config = GPT2Config(n_layer=2, n_embd=128, n_head=4)
    GPT2Model.from_config(config).save_pretrained(folder)  # a base checkpoint, like the real gpt2
    return folder


def example(model: str | None, vocab: str) -> None:
    import torch

    folder = tempfile.mkdtemp(prefix="gpt-hub-example-")
    try:
        if model is None:
            model = str(build_example_checkpoint(Path(folder), Path(vocab)))
            print(f"(random 2-layer GPT-2 with the real vocabulary in {model}: the tokens are real, the predictions are noise)")
        repo = str(REPO)
        tokenizer = torch.hub.load(repo, "gpt2Tokenizer", model, source="local")
        text_1 = "Who was Jim Henson ? Jim Henson was a puppeteer"
        text_2 = "Who was Jim Henson ? Jim Henson was a mysterious young man"
        tokenized_text_1 = tokenizer.tokenize(text_1)
        tokenized_text_2 = tokenizer.tokenize(text_2)
        indexed_tokens1 = tokenizer.convert_tokens_to_ids(tokenized_text_1)
        indexed_tokens2 = tokenizer.convert_tokens_to_ids(tokenized_text_2)
        tokens_tensor_1 = torch.tensor([indexed_tokens1])
        tokens_tensor_2 = torch.tensor([indexed_tokens2])
        print("tokens:", tokenized_text_1)

        model_ = torch.hub.load(repo, "gpt2Model", model, source="local")
        with torch.no_grad():
            hidden_states_1, past = model_(tokens_tensor_1)
            hidden_states_2, past = model_(tokens_tensor_2, past=past)
        print("gpt2Model hidden states:", tuple(hidden_states_1.shape), "then", tuple(hidden_states_2.shape),
              "with a cache of", past[0][0].shape[-2] , "positions")

        lm_model = torch.hub.load(repo, "gpt2LMHeadModel", model, source="local")
        with torch.no_grad():
            predictions_1, past = lm_model(tokens_tensor_1)
            predictions_2, past = lm_model(tokens_tensor_2, past=past)
        predicted_index = torch.argmax(predictions_2[0, -1, :]).item()
        print("gpt2LMHeadModel next token:", repr(tokenizer.decode([predicted_index])))

        double_head_model = torch.hub.load(repo, "gpt2DoubleHeadsModel", model, source="local")
        # The page stacks two rows of different lengths, which torch.tensor cannot do: pad them.
        width = max(len(indexed_tokens1), len(indexed_tokens2))
        rows = [ids + [tokenizer.eos_token_id] * (width - len(ids)) for ids in (indexed_tokens1, indexed_tokens2)]
        tokens_tensor = torch.tensor([rows])
        mc_token_ids = torch.LongTensor([[len(tokenized_text_1) - 1, len(tokenized_text_2) - 1]])
        with torch.no_grad():
            lm_logits, multiple_choice_logits, presents = double_head_model(tokens_tensor, mc_token_ids)
        print("gpt2DoubleHeadsModel choice logits:", [round(x, 4) for x in multiple_choice_logits[0].tolist()],
              "(the multiple-choice head is freshly initialised: it has to be trained)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python hubconf.py", description="OpenAI GPT and GPT-2 from this repository.")
    commands = main.add_subparsers(dest="command", required=True)
    run = commands.add_parser("example", help="run the GPT-2 hub page's example on a local checkpoint")
    run.add_argument("--model", help="a checkpoint directory (config.json, weights, vocab.json, merges.txt); "
                                     "default: a small random model with the real vocabulary")
    run.add_argument("--vocab", default=str(SHARED_VOCAB), help="folder with GPT-2's vocabulary files (default: %(default)s)")
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "example":
            if args.model is not None and not os.path.isdir(args.model):
                raise UsageError(f"--model {args.model} is not a directory")
            example(args.model, args.vocab)
    except (UsageError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
