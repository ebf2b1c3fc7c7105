"""Choosing each next token from the last position's logits: Hugging Face's logits processors
(repetition penalty, then temperature, top-k and top-p when sampling), as small functions."""

from __future__ import annotations

import torch
from torch import Tensor

from .native.argmax import argmax as native_argmax


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float, counted: Tensor | None = None) -> Tensor:
    """Scores of tokens already in the sequence are divided by ``penalty`` (multiplied, if
    negative), as in the CTRL paper. logits: [B, V]; seen: [B, T] token ids; counted: [B, T], which
    of them count (None: all): a left-padded prompt's padding does not, so that each row is
    penalised as it would be alone, as Hugging Face does."""
    weights = torch.ones_like(seen, dtype=logits.dtype) if counted is None else (counted != 0).to(logits.dtype)
    present = torch.zeros_like(logits).scatter_reduce_(1, seen, weights, reduce="amax") > 0  # [B, V]
    return torch.where(present, torch.where(logits < 0, logits * penalty, logits / penalty), logits)


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """``logits / temperature``; in rows where a tiny temperature would overflow that (or, rounded
    to float32, is 0), the logits are first shifted so that the row's best is 0 (the same
    distribution, without infinities). Off the CPU this is chosen row by row on the device:
    asking the host whether to would wait for a GPU every step."""
    scaled = logits / temperature
    if logits.is_cpu and not bool(torch.isinf(scaled).any()):  # on the CPU asking costs less than the answer
        return scaled
    overflowed = ~torch.isfinite(scaled).all(-1, keepdim=True)  # [B, 1]
    best = logits.amax(-1, keepdim=True)
    shifted = ((logits - best) / temperature).nan_to_num(nan=float("-inf")).masked_fill(logits == best, 0.0)
    return torch.where(overflowed, shifted, scaled)


def apply_top_k(logits: Tensor, k: int) -> Tensor:
    """Keep the ``k`` best scores of each row (ties at the k-th score kept)."""
    k = min(k, logits.size(-1))
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: Tensor, p: float) -> Tensor:
    """Keep the smallest set of best tokens whose probabilities add up to at least ``p``."""
    ordered, order = torch.sort(logits, descending=False)
    cumulative = ordered.softmax(-1).cumsum(-1)
    drop = cumulative <= 1 - p
    drop[..., -1] = False  # always keep the best token
    return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


def next_tokens(logits: Tensor, seen: Tensor, choose, generator: torch.Generator | None,
                counted: Tensor | None = None) -> Tensor:
    """One token per row from its last-position logits [B, V]; ``choose`` holds ``do_sample``,
    ``temperature``, ``top_k``, ``top_p`` and ``repetition_penalty`` (models/generation_args.py);
    ``counted`` says which tokens of ``seen`` the penalty counts (``apply_repetition_penalty``)."""
    if not choose.do_sample and choose.repetition_penalty == 1.0:
        chosen = native_argmax(logits)  # torch.argmax's answer, without its slow reduction (one CPU row)
        if chosen is not None:
            return chosen
    logits = logits.float()
    if choose.repetition_penalty != 1.0:
        logits = apply_repetition_penalty(logits, seen, choose.repetition_penalty, counted)
    if not choose.do_sample:
        return logits.argmax(-1)
    if choose.temperature != 1.0:
        logits = apply_temperature(logits, choose.temperature)
    if choose.top_k:
        logits = apply_top_k(logits, choose.top_k)
    if choose.top_p < 1.0:
        logits = apply_top_p(logits, choose.top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)
