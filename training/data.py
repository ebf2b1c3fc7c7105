"""What the fine-tuning commands train on: text files cut into blocks for language modelling, and
multiple-choice records in the GPT paper's input transformation.

Multiple choice (Radford et al., 2018, section 3.3): each choice becomes one sequence
``_start_ context _delimiter_ choice _classify_``; the hidden state at ``_classify_`` is scored by
the multiple-choice head, and the language-model loss over the same sequences is added with
weight 0.5. The three tokens are new: they are added to the tokenizer and the embeddings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..errors import GPTHubError
from ..models.heads import IGNORE_INDEX

MC_TOKENS = ("_start_", "_delimiter_", "_classify_")


class DataError(GPTHubError, ValueError):
    """A training or evaluation file that cannot be used, with where and why."""


def read_text(path: str | Path) -> str:
    """A UTF-8 file's text; DataError (naming the file) where it cannot be read or decoded."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}") from None


def check_readable(path: str | Path) -> None:
    """Refuse a file that cannot be opened for reading (a typo, a folder), before a model loads."""
    try:
        with open(path, "rb"):
            pass
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None


def lm_blocks(tokenizer, paths: list[str | Path], block_size: int) -> Tensor:
    """The files' tokens, one after another (each file ending with the end-of-text token where the
    tokenizer has one), cut into ``[blocks, block_size]``; the remainder shorter than a block is
    dropped."""
    if block_size < 2:
        raise DataError(f"block size must be at least 2 tokens, got {block_size}")
    ids: list[int] = []
    for path in paths:
        ids.extend(tokenizer.encode(read_text(path)))
        if tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
    blocks = len(ids) // block_size
    if blocks == 0:
        raise DataError(f"{', '.join(map(str, paths))}: {len(ids)} tokens, fewer than one block of {block_size}")
    return torch.tensor(ids[: blocks * block_size]).view(blocks, block_size)  # [N, block]


@dataclass(frozen=True)
class Choice:
    context: str
    choices: list[str]
    label: int


def read_choices(path: str | Path) -> list[Choice]:
    """JSON Lines records ``{"context": str, "choices": [str, ...], "label": int}``, every record
    with the same number of choices (ROCStories' story cloze test has two endings)."""
    records = []
    lines = read_text(path).splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as err:
            reason = "nested too deeply" if isinstance(err, RecursionError) else err
            raise DataError(f"{where}: not JSON ({reason}); expected an object with context, choices and label") from None
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected an object with context, choices and label")
        context, choices, label = record.get("context"), record.get("choices"), record.get("label")
        if not isinstance(context, str):
            raise DataError(f"{where}: context must be a string")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise DataError(f"{where}: choices must be a list of at least two strings")
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(choices):
            raise DataError(f"{where}: label must be an index into choices (0..{len(choices) - 1}), got {label!r}")
        if records and len(choices) != len(records[0].choices):
            raise DataError(f"{where}: {len(choices)} choices, but the first record has {len(records[0].choices)}")
        records.append(Choice(context, choices, label))
    if not records:
        raise DataError(f"{path} holds no records")
    return records


def add_choice_tokens(tokenizer, model) -> list[int]:
    """Add the start, delimiter and classify tokens to the tokenizer and give the model's
    embedding (and tied head) rows for them, drawn at random as in the GPT paper (rows at the mean
    of the others, Hugging Face's default, would make the three the same token at the start);
    returns their ids."""
    tokenizer.add_special_tokens({"additional_special_tokens": list(MC_TOKENS)})
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return [tokenizer.convert_tokens_to_ids(token) for token in MC_TOKENS]


def encode_choices(records: list[Choice], tokenizer, special_ids: list[int], max_length: int) -> dict[str, Tensor]:
    """The GPT paper's input transformation. Each choice keeps all of its tokens; a context too
    long to fit loses its beginning. Sequences are right-padded: causal attention never looks
    ahead, so padding needs no mask, and its labels are ignored."""
    start, delimiter, classify = special_ids
    rows, positions = [], []
    for record in records:
        context = tokenizer.encode(record.context)
        for choice in record.choices:
            ending = tokenizer.encode(choice)
            room = max_length - len(ending) - 3
            if room < 0:
                raise DataError(f"a choice of {len(ending)} tokens leaves no room in --max-length {max_length}: {choice[:60]!r}")
            ids = [start] + context[max(0, len(context) - room):] + [delimiter] + ending + [classify]
            rows.append(ids)
            positions.append(len(ids) - 1)
    width = max(map(len, rows))
    n, choices = len(records), len(records[0].choices)
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    lm_labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, ids in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        lm_labels[i, : len(ids)] = input_ids[i, : len(ids)]
    return {
        "input_ids": input_ids.view(n, choices, width),  # [N, choices, T]
        "mc_token_ids": torch.tensor(positions).view(n, choices),  # [N, choices]
        "lm_labels": lm_labels.view(n, choices, width),  # [N, choices, T]
        "mc_labels": torch.tensor([r.label for r in records]),  # [N]
    }
