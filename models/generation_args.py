"""Checks of ``generate``'s arguments, all made before any work starts: each bad value is an error
naming the argument and what it must be, never a silent wrong answer."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import (ArgumentTypeError, GPTHubError, InvalidArgumentError, flag, integer, real, take_neutral,
                      unset_or_flag, unset_or_off)
from .inputs import check_token_ids

logger = logging.getLogger(__name__)


class GenerationConfigError(GPTHubError, AttributeError):
    """A generate option set on ``generation_config`` that it does not hold (it would be ignored)."""


class GenerationConfig:
    """``model.generation_config``: the token ids ``generate`` takes where none is passed, as
    transformers' (``model.generation_config.pad_token_id = tokenizer.eos_token_id``); None: the
    model config's. Kept in memory, not saved. The other options are ``generate``'s arguments:
    setting one here is refused, not ignored."""

    FIELDS = ("pad_token_id", "eos_token_id", "bos_token_id")

    def __init__(self) -> None:
        for name in self.FIELDS:
            object.__setattr__(self, name, None)

    def __setattr__(self, name: str, value) -> None:
        if name not in self.FIELDS:
            raise GenerationConfigError(f"generation_config holds pad_token_id, eos_token_id and bos_token_id only: "
                                        f"pass {name} to generate() itself")
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str):  # only for names it does not hold (transformers' max_length, top_k...)
        if name.startswith("__"):
            raise AttributeError(name)
        raise GenerationConfigError(f"generation_config holds pad_token_id, eos_token_id and bos_token_id only, not "
                                    f"{name}: generate()'s options are its arguments, with the defaults it documents")

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.FIELDS}

    def __repr__(self) -> str:
        return f"GenerationConfig({', '.join(f'{n}={v!r}' for n, v in self.to_dict().items())})"


# transformers' generate options that change nothing at these values (what pasted code passes:
# use_cache=True, num_beams=1, output_scores=False); beam-search settings without beams do nothing.
def _one(value) -> bool:
    return value is None or (not isinstance(value, bool) and value == 1)


def _zero(value) -> bool:
    return value is None or (not isinstance(value, bool) and value == 0)


_NOT_DONE = ("does not do that: it decodes greedily or samples, one sequence per row (no beam search, n-gram bans "
             "or scores returned)")
NEUTRAL_OPTIONS = {name: (changes_nothing, _NOT_DONE) for name, changes_nothing in {
    "use_cache": unset_or_flag, "early_stopping": lambda value: True, "length_penalty": lambda value: True,
    "num_beams": _one, "num_beam_groups": _one, "typical_p": _one, "no_repeat_ngram_size": _zero,
    "bad_words_ids": lambda value: value is None,
    **dict.fromkeys(("output_scores", "output_logits", "output_attentions", "output_hidden_states",
                     "return_dict_in_generate"), unset_or_off),
}.items()}


def neutral_options(kwargs: dict) -> dict:
    """``kwargs`` less transformers' generate options at values that change nothing here."""
    return take_neutral(kwargs, NEUTRAL_OPTIONS, "generate")


def default_ids(model, name: str, vocab_size: int) -> list[int]:
    """``eos_token_id`` or ``pad_token_id`` where generate was given none: the generation
    config's, checked, else the model config's."""
    value = getattr(getattr(model, "generation_config", None), name, None)
    if value is not None:
        return token_ids(f"generation_config.{name}", value, vocab_size)
    return config_ids(model.config, name, vocab_size)


@dataclass(frozen=True)
class Sampling:
    do_sample: bool
    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float


def prompt(input_ids, attention_mask, vocab_size: int, device: torch.device,
           pad_token_id: int | None = None) -> tuple[Tensor, Tensor]:
    """``input_ids`` as ``[batch, length]`` int64 (a single row may be 1-D) and its mask, both
    checked, and on ``device`` (the model's). Without a mask, ``pad_token_id`` (when given: it
    is no eos id) marks the padding, as Hugging Face infers it; else every token counts."""
    if not isinstance(input_ids, Tensor):
        raise ArgumentTypeError(f"input_ids must be a tensor of token ids, got {type(input_ids).__name__}")
    for name, tensor in (("input_ids", input_ids), ("attention_mask", attention_mask)):
        if isinstance(tensor, Tensor) and tensor.device != device:
            raise InvalidArgumentError(f"{name} is on {tensor.device} and the model on {device}: pass "
                                       f"{name}.to(model.device)")
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.dim() != 2 or not input_ids.numel():
        raise InvalidArgumentError(f"input_ids must be [batch, length] with at least one token, got shape "
                                   f"{list(input_ids.shape)}")
    check_token_ids(input_ids, vocab_size)
    input_ids = input_ids.long()
    if attention_mask is None:
        if pad_token_id is None:
            return input_ids, torch.ones_like(input_ids)
        attention_mask = (input_ids != pad_token_id).long()
        empty = _first_empty_row(attention_mask)
        if empty is not None:
            raise InvalidArgumentError(f"input_ids row {empty} is all pad_token_id={pad_token_id}, "
                                       "which marks padding: a row needs at least one token")
        _check_left_padded(attention_mask, f"input_ids row {{row}} ends in pad_token_id={pad_token_id}, which marks "
                                           "padding where no attention_mask is given (for a prompt without padding, "
                                           "pass attention_mask=torch.ones_like(input_ids))")
        return input_ids, attention_mask
    if not isinstance(attention_mask, Tensor):
        raise ArgumentTypeError(f"attention_mask must be a tensor, got {type(attention_mask).__name__}")
    if attention_mask.dim() == 1:
        attention_mask = attention_mask[None]
    if attention_mask.shape != input_ids.shape:
        raise InvalidArgumentError(f"attention_mask has shape {list(attention_mask.shape)}; it must match "
                                   f"input_ids, {list(input_ids.shape)}")
    if attention_mask.is_complex() or bool(((attention_mask != 0) & (attention_mask != 1)).any()):
        raise InvalidArgumentError("attention_mask must hold 1 for tokens and 0 for padding")
    empty = _first_empty_row(attention_mask)
    if empty is not None:
        raise InvalidArgumentError(f"attention_mask row {empty} masks every token: a row needs at least one")
    _check_left_padded(attention_mask, "attention_mask row {row} ends in padding")
    return input_ids, attention_mask.long()


def _check_left_padded(attention_mask: Tensor, problem: str) -> None:
    """Refuse a prompt whose last position is padding (a right-padded batch, as tokenizers pad by
    default): each row goes on from its last token, and would go on from a pad (transformers
    warns and gives those rows wrong tokens)."""
    ends = attention_mask[:, -1] == 0  # [batch]
    if bool(ends.any()):
        raise InvalidArgumentError(problem.format(row=int(ends.nonzero()[0])) + ": generate goes on from each row's "
                                   "last token, so pad prompts on the left (tokenizer.padding_side = 'left')")


def _first_empty_row(attention_mask: Tensor) -> int | None:
    """The first row of ``attention_mask`` ``[batch, length]`` that masks every token, or None."""
    empty = (attention_mask == 0).all(-1)  # [batch]
    return int(empty.nonzero()[0]) if bool(empty.any()) else None


def generator(value, seed, device: torch.device) -> torch.Generator | None:
    """The generator sampling draws from: ``value``, a ``torch.Generator`` on the model's device
    (sampling draws where the logits are), or one made there from ``seed``, or None."""
    if seed is not None:
        if value is not None:
            raise InvalidArgumentError("give seed or generator, not both: seed makes a generator of its own")
        return torch.Generator(device=device).manual_seed(integer("seed", seed, low=0, high=2 ** 64 - 1))
    if value is None:
        return None
    if not isinstance(value, torch.Generator):
        raise ArgumentTypeError(f"generator must be a torch.Generator, got {type(value).__name__}")
    if value.device.type != device.type or (value.device.index or 0) != (device.index or 0):
        raise InvalidArgumentError(f"generator is on {value.device} and the model on {device}: make it with "
                                   f"torch.Generator(device=model.device)")
    return value


def new_tokens(max_length, max_new_tokens, prompt_length: int, n_positions: int) -> int:
    """How many tokens to generate: ``max_new_tokens``, else what ``max_length`` leaves."""
    if max_new_tokens is not None:
        name, new = "max_new_tokens", integer("max_new_tokens", max_new_tokens, low=0)
    else:
        limit = integer("max_length", max_length, low=1)
        name, new = "max_length", max(0, limit - prompt_length)
        if not new:  # as the API documents (max_length counts the prompt), but never silently
            logger.warning("max_length=%d counts the prompt, which has %d tokens: nothing is generated (give "
                           "max_new_tokens)", limit, prompt_length)
    if prompt_length + new > n_positions:
        raise InvalidArgumentError(f"{name}: {prompt_length} prompt tokens plus {new} new ones exceed the model's "
                                   f"n_positions={n_positions}")
    return new


def config_ids(config, name: str, vocab_size: int) -> list[int]:
    """The config's ``eos_token_id`` or ``pad_token_id`` (one or a list), generate's defaults as in
    Hugging Face, leaving out ids a resized or custom vocabulary does not have."""
    value = getattr(config, name, None)
    values = value if isinstance(value, (list, tuple)) else [] if value is None else [value]
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < vocab_size]


def token_ids(name: str, value, vocab_size: int) -> list[int]:
    """An id or a list of ids (``eos_token_id`` may be several), each in the vocabulary."""
    if value is None:
        return []
    if hasattr(value, "tolist"):  # a tensor or a NumPy array (or scalar), as transformers takes them
        value = value.tolist()
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    return [integer(name, v, low=0, high=vocab_size - 1) for v in values]


def sampling(do_sample, temperature, top_k, top_p, repetition_penalty) -> Sampling:
    """The sampling options, checked; None stands for each one's default (as in Hugging Face's
    generation config). Greedy decoding uses none of temperature, top_k and top_p, and takes a
    temperature or top_p of 0 as Hugging Face does (0 is the OpenAI API's greedy temperature)."""
    do_sample = flag("do_sample", do_sample)
    temperature = 1.0 if temperature is None else temperature
    top_k, top_p = 0 if top_k is None else top_k, 1.0 if top_p is None else top_p
    return Sampling(do_sample, real("temperature", temperature, low=0.0, low_open=do_sample),
                    integer("top_k", top_k, low=0), real("top_p", top_p, low=0.0, high=1.0, low_open=do_sample),
                    real("repetition_penalty", repetition_penalty, low=0.0, low_open=True))

