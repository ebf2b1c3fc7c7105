"""Text generation as a plain loop of small functions, over a preallocated key/value cache.

``generate`` is available on every model with a language-model head. Its filters match Hugging
Face's logits processors (repetition penalty, then temperature, top-k and top-p when sampling),
and batched prompts of different lengths (left-padded, with their attention mask) give each row
what it gives alone: positions count real tokens, and rows that reach ``eos_token_id`` stop and are
padded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch
from torch import Tensor

from ..errors import InvalidArgumentError, integer
from . import generation_args as checks
from .decoder import bindable_head
from .kv_cache import StaticKVCache
from .sampling import next_tokens

# Greedy steps with nothing to do between them (no streamer, no eos) run this many at a time in one
# native call: the Python between two steps costs about 0.3 ms, cold after each step's weights.
GREEDY_RUN = 16


@torch.no_grad()
def generate(model, input_ids: Tensor, attention_mask: Tensor | None = None, max_length: int = 20,
             max_new_tokens: int | None = None, do_sample: bool = False, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, repetition_penalty: float = 1.0, pad_token_id: int | None = None,
             eos_token_id: int | list[int] | None = None, num_return_sequences: int = 1,
             generator: torch.Generator | None = None, seed: int | None = None, streamer=None,
             min_new_tokens: int | None = None, min_length: int = 0) -> Tensor:
    """The prompt followed by up to ``max_new_tokens`` new tokens (or up to ``max_length`` in
    all), ``[batch * num_return_sequences, length]``, with the defaults of this repository's API
    (the 2019 hub pages': ``max_length=20`` counts the prompt, ``top_k=0`` samples from the whole
    vocabulary). Rows stop at any of
    ``eos_token_id`` (one id or a list; None: the config's, as Hugging Face does; ``[]``: none) and
    are then padded with ``pad_token_id`` (None: ``model.generation_config``'s, else the config's,
    else the first eos id; eos likewise). Without an
    ``attention_mask``, a ``pad_token_id`` that is no eos id marks the prompt's padding, as in
    Hugging Face. ``streamer`` gets each step's tokens (``put``) and
    ``end()``, as Hugging Face's streamers do (tokenizers/streaming.py). ``min_length`` (which
    counts the prompt, as ``max_length`` does), or ``min_new_tokens`` where given, keeps eos from
    being chosen before then, as transformers' options of those names do."""
    table = model.get_input_embeddings()
    vocab_size = table.num_embeddings
    eos = (checks.token_ids("eos_token_id", eos_token_id, vocab_size) if eos_token_id is not None
           else checks.default_ids(model, "eos_token_id", vocab_size))
    if pad_token_id is not None:
        pad_token_id = integer("pad_token_id", pad_token_id, low=0, high=vocab_size - 1)
    else:
        pad_token_id = next(iter(checks.default_ids(model, "pad_token_id", vocab_size)), None)
    input_ids, attention_mask = checks.prompt(input_ids, attention_mask, vocab_size, table.weight.device,
                                              None if pad_token_id in eos else pad_token_id)
    new = checks.new_tokens(max_length, max_new_tokens, input_ids.size(1), model.config.n_positions)
    choose = checks.sampling(do_sample, temperature, top_k, top_p, repetition_penalty)
    repeats = integer("num_return_sequences", num_return_sequences, low=1)
    eos_allowed_from = (integer("min_length", min_length or 0, low=0) if min_new_tokens is None  # a length of rows
                        else input_ids.size(1) + integer("min_new_tokens", min_new_tokens, low=0))
    if repeats > 1 and not choose.do_sample:  # Hugging Face refuses it too
        raise InvalidArgumentError(f"num_return_sequences={repeats} with greedy decoding would give {repeats} copies "
                                   "of one sequence: pass do_sample=True")
    generator = checks.generator(generator, seed, input_ids.device)
    if repeats > 1:
        input_ids = input_ids.repeat_interleave(repeats, 0)
        attention_mask = attention_mask.repeat_interleave(repeats, 0)
    if new == 0:  # nothing to add: a streamer still hears the prompt and the end (a reader may wait on it)
        if streamer is not None:
            streamer.put(input_ids.cpu())
            streamer.end()
        return input_ids
    batch, prompt = input_ids.shape
    total = prompt + new
    pad = pad_token_id if pad_token_id is not None else (eos or [0])[0]
    stop = torch.tensor(eos, device=input_ids.device) if eos else None

    tokens = torch.full((batch, total), pad, dtype=input_ids.dtype, device=input_ids.device)  # [B, S]
    tokens[:, :prompt] = input_ids
    mask = None  # without padding, plain causal attention needs no mask
    if not bool(attention_mask.all()):
        mask = torch.ones((batch, total), dtype=attention_mask.dtype, device=input_ids.device)  # [B, S]
        mask[:, :prompt] = attention_mask
    last_logits, greedy, native_decoding = step_functions(model)
    # batch-1 steps in C read a bfloat16 model's keys as they are, in half the bytes (models/kv_cache.py)
    compact = new > 1 and batch == 1 and mask is None and model.dtype == torch.bfloat16 and native_decoding()
    cache = StaticKVCache.for_model(model, batch, total, compact=compact)
    if choose.do_sample or choose.repetition_penalty != 1.0 or mask is not None:
        greedy = None  # its choice is the logits' argmax, nothing else
    finished = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    if streamer is not None:  # on the CPU, as transformers hands them over (a streamer may call .numpy())
        streamer.put(input_ids.cpu())

    run = GREEDY_RUN if streamer is None and stop is None else 1  # greedy steps per native call
    step_input, length = input_ids, prompt
    while length < total:
        early = stop is not None and length < eos_allowed_from  # eos may not be chosen yet
        chosen = None if greedy is None or early else greedy(step_input, cache, min(run, total - length))  # [n]
        if chosen is None:
            visible = None if mask is None else mask[:, :length]  # [B, length]
            logits = last_logits(step_input, cache, visible)
            if early:
                logits = logits.index_fill(-1, stop, -math.inf)
            chosen = next_tokens(logits, tokens[:, :length], choose, generator, visible)[:, None]  # [B, 1]
        else:
            chosen = chosen[None]  # [1, n]
        if stop is not None:  # rows already finished get padding
            chosen = torch.where(finished[:, None], torch.full_like(chosen, pad), chosen)
        token = chosen[:, -1]  # [B]; with a streamer or eos, every step is one token
        tokens[:, length:length + chosen.size(1)] = chosen
        length += chosen.size(1)
        if streamer is not None:
            streamer.put(token.cpu())
        if stop is not None:
            finished |= torch.isin(token, stop)
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
    return step_functions(model)[0]


class Steps(NamedTuple):
    logits: Callable[[Tensor, StaticKVCache, Tensor | None], Tensor]  # step_function's step
    greedy: Callable | None  # (input_ids, cache, steps) -> the next steps tokens [steps] or None
    native_decoding: Callable[[], bool]  # whether one token of one row will step in C


def step_functions(model) -> Steps:
    """``step_function``'s step; where the model is bound, its greedy steps: steps and the argmax
    of their logits in one native call, choosing what they would (native/decoder.py), None where
    there are none; and whether its steps of one token of one row run natively."""
    body, head = model.transformer, model.lm_head
    plain_model = not (model.training or model._forward_hooks or model._forward_pre_hooks or "forward" in vars(model))
    bound_body = None
    if plain_model and type(body) is type(model).base_model_class and bindable_head(head):
        bound_body = body.bind()
    if bound_body is None:
        return Steps(partial(_module_logits, model), None, lambda: False)
    return Steps(partial(_bound_logits, body=bound_body, head=head.bind()), bound_body.greedy(head.native_route),
                 lambda: bound_body.native.native() is not None)


def _bound_logits(input_ids: Tensor, cache: StaticKVCache, attention_mask: Tensor | None, *, body, head) -> Tensor:
    return head(body(input_ids, cache, attention_mask))  # [B, V]


def _module_logits(model, input_ids: Tensor, cache: StaticKVCache, attention_mask: Tensor | None) -> Tensor:
    """Logits of the last position only: the head's matrix is the largest, and only they are used."""
    hidden = model.transformer(input_ids, past=cache, attention_mask=attention_mask).last_hidden_state
    return model.lm_head(hidden[:, -1])  # [B, V]
