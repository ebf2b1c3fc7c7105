"""Model outputs that read both ways: as the 2019 tuples and as today's objects.

``hidden_states, past = model(x)`` and ``lm_logits, mc_logits, presents = dh(x, mc_token_ids)``
unpack as in 2019 because iterating an output yields its values that are not None, in field
order (Hugging Face's outputs unpack to their key *names* instead). ``out.logits``,
``out["logits"]`` and ``out[0]`` work as in Hugging Face. Indexing with a tuple indexes the first
tensor, so the 2019 GPT page's ``predictions[0, -1, :]`` reads the logits as it did when the
model returned a bare tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, make_dataclass
from typing import Any

import torch

Tensor = torch.Tensor


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


def _output(name: str, *names: str) -> type[ModelOutput]:
    """A ``ModelOutput`` dataclass with these fields, in this order (each None when not computed)."""
    return make_dataclass(name, [(field_name, Any, None) for field_name in names], bases=(ModelOutput,),
                          namespace={"__module__": __name__})


_STATES = ("hidden_states", "attentions")  # per layer, with output_hidden_states / output_attentions
BaseModelOutputWithPast = _output("BaseModelOutputWithPast", "last_hidden_state", "past_key_values", *_STATES)
CausalLMOutputWithPast = _output("CausalLMOutputWithPast", "loss", "logits", "past_key_values", *_STATES)
SequenceClassifierOutputWithPast = _output("SequenceClassifierOutputWithPast", "loss", "logits", "past_key_values",
                                           *_STATES)
TokenClassifierOutput = _output("TokenClassifierOutput", "loss", "logits", *_STATES)
QuestionAnsweringModelOutput = _output("QuestionAnsweringModelOutput", "loss", "start_logits", "end_logits", *_STATES)


class DoubleHeadsModelOutput(_output("DoubleHeadsModelOutput", "loss", "mc_loss", "logits", "mc_logits",
                                     "past_key_values", *_STATES)):
    """The language model's loss and logits, the multiple-choice head's, and the cache."""

    @property
    def lm_loss(self) -> Tensor | None:
        return self.loss

    @property
    def lm_logits(self) -> Tensor | None:
        return self.logits
