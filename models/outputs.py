"""Model outputs that read both ways: as the 2019 tuples and as today's objects.

``hidden_states, past = model(x)`` and ``lm_logits, mc_logits, presents = dh(x, mc_token_ids)``
unpack as in 2019 because iterating an output yields its values that are not None, in field
order (Hugging Face's outputs unpack to their key *names* instead). ``out.logits``,
``out["logits"]`` and ``out[0]`` work as in Hugging Face. Indexing with a tuple indexes the first
tensor, so the 2019 GPT page's ``predictions[0, -1, :]`` reads the logits as it did when the
model returned a bare tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch

Tensor = torch.Tensor
KeyValueCache = tuple[tuple[Tensor, Tensor], ...]


@dataclass
class ModelOutput:
    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(value for value in (getattr(self, f.name) for f in fields(self)) if value is not None)

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def __iter__(self):
        return iter(self.to_tuple())

    def __len__(self) -> int:
        return len(self.to_tuple())

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(key)
            return getattr(self, key)
        if isinstance(key, (int, slice)):
            return self.to_tuple()[key]
        return self.to_tuple()[0][key]  # tensor indexing, e.g. predictions[0, -1, :]


@dataclass
class BaseModelOutputWithPast(ModelOutput):
    last_hidden_state: Tensor | None = None
    past_key_values: KeyValueCache | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


@dataclass
class CausalLMOutputWithPast(ModelOutput):
    loss: Tensor | None = None
    logits: Tensor | None = None
    past_key_values: KeyValueCache | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


@dataclass
class DoubleHeadsModelOutput(ModelOutput):
    loss: Tensor | None = None
    mc_loss: Tensor | None = None
    logits: Tensor | None = None
    mc_logits: Tensor | None = None
    past_key_values: KeyValueCache | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None

    @property
    def lm_loss(self) -> Tensor | None:
        return self.loss

    @property
    def lm_logits(self) -> Tensor | None:
        return self.logits


@dataclass
class SequenceClassifierOutputWithPast(ModelOutput):
    loss: Tensor | None = None
    logits: Tensor | None = None
    past_key_values: KeyValueCache | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


@dataclass
class TokenClassifierOutput(ModelOutput):
    loss: Tensor | None = None
    logits: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


@dataclass
class QuestionAnsweringModelOutput(ModelOutput):
    loss: Tensor | None = None
    start_logits: Tensor | None = None
    end_logits: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
