"""Text generation as a plain loop of small functions, over a preallocated key/value cache.

``generate`` is available on every model with a language-model head. Its filters match Hugging
Face's logits processors (repetition penalty, then temperature, top-k and top-p when sampling),
and batched prompts of different lengths (left-padded, with their attention mask) give each row
what it gives alone: positions count real tokens, and rows that reach ``eos_token_id`` stop and are
padded.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

from .decoder import bindable
from .inputs import check_attention_mask, check_token_ids
from .kv_cache import StaticKVCache


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """Scores of tokens already in the sequence are divided by ``penalty`` (multiplied, if
    negative), as in the CTRL paper. logits: [B, V]; seen: [B, T] token ids."""
    scores = logits.gather(1, seen)
    scores = torch.where(scores < 0, scores * penalty, scores / penalty)
    return logits.scatter(1, seen, scores)


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


def next_tokens(logits: Tensor, seen: Tensor, *, do_sample: bool, temperature: float, top_k: int, top_p: float,
                repetition_penalty: float, generator: torch.Generator | None) -> Tensor:
    """One token per row from its last-position logits [B, V]."""
    logits = logits.float()
    if repetition_penalty != 1.0:
        logits = apply_repetition_penalty(logits, seen, repetition_penalty)
    if not do_sample:
        return logits.argmax(-1)
    if temperature != 1.0:
        logits = logits / temperature
    if top_k:
        logits = apply_top_k(logits, top_k)
    if top_p < 1.0:
        logits = apply_top_p(logits, top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(model, input_ids: Tensor, attention_mask: Tensor | None = None, max_length: int = 20,
             max_new_tokens: int | None = None, do_sample: bool = False, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, repetition_penalty: float = 1.0, pad_token_id: int | None = None,
             eos_token_id: int | None = None, num_return_sequences: int = 1, generator: torch.Generator | None = None,
             seed: int | None = None, streamer=None) -> Tensor:
    """The prompt followed by up to ``max_new_tokens`` new tokens (or up to ``max_length`` in
    all), ``[batch * num_return_sequences, length]``. ``streamer`` gets each step's tokens
    (``put``) and ``end()``, as Hugging Face's streamers do (see tokenizers/streaming.py)."""
    _check(temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
           num_return_sequences=num_return_sequences)
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    check_token_ids(input_ids, model.get_input_embeddings().num_embeddings)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    check_attention_mask(attention_mask, input_ids.size(0), 0, input_ids.size(1))
    if num_return_sequences > 1:
        input_ids = input_ids.repeat_interleave(num_return_sequences, 0)
        attention_mask = attention_mask.repeat_interleave(num_return_sequences, 0)
    if seed is not None:
        generator = torch.Generator(device=input_ids.device).manual_seed(seed)
    batch, prompt = input_ids.shape
    new = max_new_tokens if max_new_tokens is not None else max_length - prompt
    if new <= 0:
        return input_ids
    total = prompt + new
    if total > model.config.n_positions:
        raise ValueError(f"{prompt} prompt tokens plus {new} new ones exceed n_positions={model.config.n_positions}")
    pad = pad_token_id if pad_token_id is not None else (eos_token_id if eos_token_id is not None else 0)

    tokens = torch.full((batch, total), pad, dtype=input_ids.dtype, device=input_ids.device)  # [B, S]
    tokens[:, :prompt] = input_ids
    mask = None  # without padding, plain causal attention needs no mask
    if not bool(attention_mask.all()):
        mask = torch.ones((batch, total), dtype=attention_mask.dtype, device=input_ids.device)  # [B, S]
        mask[:, :prompt] = attention_mask
    cache = StaticKVCache.for_model(model, batch, total)
    last_logits = step_function(model)
    finished = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    choose = dict(do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                  repetition_penalty=repetition_penalty, generator=generator)
    if streamer is not None:
        streamer.put(input_ids)

    step_input, length = input_ids, prompt
    for position in range(prompt, total):
        logits = last_logits(step_input, cache, None if mask is None else mask[:, :length])
        token = next_tokens(logits, tokens[:, :length], **choose)
        if eos_token_id is not None:  # rows already finished get padding
            token = torch.where(finished, torch.full_like(token, pad), token)
        tokens[:, position] = token
        length = position + 1
        if streamer is not None:
            streamer.put(token)
        if eos_token_id is not None:
            finished |= token == eos_token_id
            if bool(finished.all()):
                break
        step_input = token[:, None]  # [B, 1]
    if streamer is not None:
        streamer.end()
    return tokens[:, :length]


def step_function(model) -> Callable[[Tensor, StaticKVCache, Tensor | None], Tensor]:
    """``(input_ids, cache, attention_mask) -> logits of the last position [B, V]``. Where the
    body and the head can be bound (see ``DecoderModel.bind``), their parameters are bound once;
    otherwise the modules run, hooks and all. Both run models/functional.py."""
    body, head = model.transformer, model.lm_head
    plain_model = not (model.training or model._forward_hooks or model._forward_pre_hooks or "forward" in vars(model))
    bound_body = None
    if plain_model and type(body) is type(model).base_model_class and bindable(head):
        bound_body = body.bind()
    if bound_body is None:
        return partial(_module_logits, model)
    return partial(_bound_logits, body=bound_body, head=head.bind())


def _bound_logits(input_ids: Tensor, cache: StaticKVCache, attention_mask: Tensor | None, *, body, head) -> Tensor:
    return head(body(input_ids, cache, attention_mask))  # [B, V]


def _module_logits(model, input_ids: Tensor, cache: StaticKVCache, attention_mask: Tensor | None) -> Tensor:
    """Logits of the last position only: the head's matrix is the largest, and only they are used."""
    hidden = model.transformer(input_ids, past=cache, attention_mask=attention_mask).last_hidden_state
    return model.lm_head(hidden[:, -1])  # [B, V]


def _check(**values) -> None:
    if values["temperature"] <= 0:
        raise ValueError(f"temperature must be > 0, got {values['temperature']}")
    if values["top_k"] < 0:
        raise ValueError(f"top_k must be >= 0, got {values['top_k']}")
    if not 0 < values["top_p"] <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {values['top_p']}")
    if values["repetition_penalty"] <= 0:
        raise ValueError(f"repetition_penalty must be > 0, got {values['repetition_penalty']}")
    if values["num_return_sequences"] < 1:
        raise ValueError(f"num_return_sequences must be >= 1, got {values['num_return_sequences']}")
