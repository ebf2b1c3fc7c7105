"""The two fine-tuning tasks: language modelling on text files, and multiple choice with the
GPT paper's input transformation and auxiliary language-model loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .data import add_choice_tokens, encode_choices, lm_blocks, read_choices
from .loop import Rows, Task


def language_modelling(model: nn.Module, tokenizer, train_files: list[str], eval_files: list[str] | None,
                       block_size: int | None = None) -> Task:
    """Next-token prediction on blocks of ``block_size`` tokens (default: the model's context);
    evaluated as perplexity."""
    block = block_size or model.config.n_positions
    if block > model.config.n_positions:
        raise ValueError(f"block size {block} exceeds the model's n_positions={model.config.n_positions}")

    def loss(engine, batch):
        return engine(input_ids=batch["input_ids"], labels=batch["input_ids"], use_cache=False).loss

    def score(engine, batch):
        ids = batch["input_ids"]
        logits = engine(input_ids=ids, use_cache=False).logits[:, :-1].float()  # [B, T-1, V]
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1), reduction="sum")
        return {"nll": nll, "tokens": torch.tensor(ids[:, 1:].numel(), device=ids.device)}

    def summarise(sums):
        mean = sums["nll"] / sums["tokens"]
        return {"eval_loss": mean, "perplexity": math.exp(mean)}

    return Task(
        train=Rows({"input_ids": lm_blocks(tokenizer, train_files, block)}),
        eval=Rows({"input_ids": lm_blocks(tokenizer, eval_files, block)}) if eval_files else None,
        loss=loss, score=score, summarise=summarise,
        save_extra=lambda folder: tokenizer.save_pretrained(folder),
    )


def multiple_choice(model: nn.Module, tokenizer, train_file: str, eval_file: str | None,
                    max_length: int | None = None, lm_coef: float = 0.5) -> Task:
    """The multiple-choice head trained with cross-entropy over the choices, plus ``lm_coef``
    times the language-model loss on the same sequences (the paper's lambda = 0.5); evaluated as
    accuracy. Adds the start, delimiter and classify tokens to the tokenizer and the model."""
    length = max_length or model.config.n_positions
    if length > model.config.n_positions:
        raise ValueError(f"max length {length} exceeds the model's n_positions={model.config.n_positions}")
    special = add_choice_tokens(tokenizer, model)

    def encode(path):
        return Rows(encode_choices(read_choices(path), tokenizer, special, length))

    def forward(engine, batch):
        return engine(input_ids=batch["input_ids"], mc_token_ids=batch["mc_token_ids"],
                      lm_labels=batch["lm_labels"], mc_labels=batch["mc_labels"], use_cache=False)

    def loss(engine, batch):
        out = forward(engine, batch)
        return out.mc_loss + lm_coef * out.loss

    def score(engine, batch):
        out = forward(engine, batch)
        predicted = out.mc_logits.argmax(-1)  # [B]
        count = torch.tensor(batch["mc_labels"].numel(), device=predicted.device)
        return {"correct": (predicted == batch["mc_labels"]).sum(), "examples": count,
                "mc_loss": out.mc_loss.float() * count}

    def summarise(sums):
        return {"accuracy": sums["correct"] / sums["examples"], "mc_loss": sums["mc_loss"] / sums["examples"]}

    return Task(train=encode(train_file), eval=encode(eval_file) if eval_file else None,
                loss=loss, score=score, summarise=summarise,
                save_extra=lambda folder: tokenizer.save_pretrained(folder))
