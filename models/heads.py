"""Task heads on top of a transformer, shared by GPT and GPT-2.

A family makes its heads by naming its base model: ``class GPT2LMHeadModel(LMHeadModel,
GPT2PreTrainedModel): base_model_class = GPT2Model``. Every head's ``forward`` takes the base
model's arguments (``past``, ``attention_mask``, ``position_ids``, ...) by keyword and passes them on.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ArgumentTypeError, InvalidArgumentError, UnknownArgumentError
from .generation import generate
from .generation_args import NEUTRAL_OPTIONS, GenerationConfig, neutral_options
from .inputs import check_choice_positions
from .layers import Linear
from .outputs import (CausalLMOutputWithPast, DoubleHeadsModelOutput, QuestionAnsweringModelOutput,
                      SequenceClassifierOutputWithPast, TokenClassifierOutput)
from .pretrained import PreTrainedModel

IGNORE_INDEX = -100


class SequenceSummary(nn.Module):
    """The multiple-choice head: pick one hidden state per sequence, then project it.

    ``summary_type`` picks the state: ``cls_index`` (at ``mc_token_ids``, else the last), ``last``,
    ``first`` or ``mean``.
    """

    def __init__(self, config, n_embd: int):
        super().__init__()
        self.summary_type = config.summary_type
        self.summary: nn.Module = nn.Identity()
        if config.summary_use_proj:
            out = config.num_labels if config.summary_proj_to_labels and config.num_labels > 0 else n_embd
            self.summary = nn.Linear(n_embd, out)
        self.activation = torch.tanh if config.summary_activation == "tanh" else nn.Identity()
        self.first_dropout = nn.Dropout(config.summary_first_dropout)
        self.last_dropout = nn.Dropout(config.summary_last_dropout)

    def forward(self, hidden: Tensor, cls_index: Tensor | None = None) -> Tensor:
        # hidden: [..., T, C]; cls_index: [...]
        if self.summary_type == "first":
            picked = hidden[..., 0, :]
        elif self.summary_type == "mean":
            picked = hidden.mean(-2)
        elif self.summary_type == "cls_index" and cls_index is not None:
            index = cls_index[..., None, None].expand(*cls_index.shape, 1, hidden.size(-1))  # [..., 1, C]
            picked = hidden.gather(-2, index).squeeze(-2)  # [..., C]
        else:  # "last", or cls_index without indices
            picked = hidden[..., -1, :]
        return self.last_dropout(self.activation(self.summary(self.first_dropout(picked))))


def lm_loss(logits: Tensor, labels: Tensor, num_items_in_batch: int | Tensor | None = None) -> Tensor:
    """Next-token cross-entropy: position t predicts label t+1; labels of -100 are ignored. With
    ``num_items_in_batch`` (what transformers' Trainer passes when it accumulates gradients), the
    sum over this batch divided by it, so that accumulated batches weigh each token alike."""
    shifted_logits = logits[..., :-1, :].float().reshape(-1, logits.size(-1))  # [N, V]
    shifted_labels = labels[..., 1:].reshape(-1).to(logits.device)  # [N]
    if num_items_in_batch is None:
        return F.cross_entropy(shifted_logits, shifted_labels, ignore_index=IGNORE_INDEX)
    total = F.cross_entropy(shifted_logits, shifted_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    if isinstance(num_items_in_batch, Tensor):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def _labels(labels: Tensor | None, lm_labels: Tensor | None) -> Tensor | None:
    if labels is not None and lm_labels is not None:
        raise InvalidArgumentError("give the language-model labels as labels or as lm_labels, not both")
    return labels if labels is not None else lm_labels


class _Head(PreTrainedModel):
    base_model_class: type[PreTrainedModel]
    accepts_loss_kwargs = False  # transformers' Trainer passes num_items_in_batch only where True

    def __init__(self, config):
        super().__init__(config)
        self.transformer = self.base_model_class(config)

    @classmethod
    def on(cls, body: type[PreTrainedModel], doc: str) -> type:
        """This head on a family's body: ``LMHeadModel.on(GPT2Model, doc)`` is the class
        ``GPT2LMHeadModel``, a subclass of this head and of the body's family base (its last base,
        ``GPT2PreTrainedModel``), defined in the body's module."""
        name = body.__name__.removesuffix("Model") + cls.__name__
        attributes = {"base_model_class": body, "__doc__": doc, "__module__": body.__module__, "__qualname__": name}
        return type(name, (cls, body.__bases__[-1]), attributes)


class _Generates:
    @property
    def generation_config(self) -> GenerationConfig:
        """The token ids ``generate`` takes where none is passed (``models.generation_args``)."""
        if "_generation_config" not in self.__dict__:
            self._generation_config = GenerationConfig()
        return self._generation_config

    def generate(self, input_ids=None, **kwargs):
        """Greedy or sampled continuation of ``input_ids`` (or transformers' ``inputs=``); see
        ``models.generation.generate``. transformers' options at values that change nothing
        (``use_cache=True``, ``num_beams=1``) are taken; at others, and an option it does not
        take, they are refused by name, with the options it does take."""
        inputs = kwargs.pop("inputs", None)
        if inputs is not None:
            if input_ids is not None:
                raise ArgumentTypeError(f"{type(self).__name__}.generate got both input_ids and inputs (the same)")
            input_ids = inputs
        unknown = sorted(set(neutral_options(kwargs)) - _GENERATE_OPTIONS)
        if unknown:
            options = sorted(_GENERATE_OPTIONS)
            raise UnknownArgumentError.naming(unknown, ["input_ids", *options, *NEUTRAL_OPTIONS],
                                              f"{type(self).__name__}.generate",
                                              f"; it decodes greedily or samples (no beam search), taking "
                                              f"{', '.join(options)}")
        if input_ids is None:
            raise ArgumentTypeError(f"{type(self).__name__}.generate needs input_ids, the prompt's token ids")
        return generate(self, input_ids, **kwargs)


_GENERATE_OPTIONS = frozenset(inspect.signature(generate).parameters) - {"model", "input_ids"}


class LMHeadModel(_Generates, _Head):
    accepts_loss_kwargs = True

    def __init__(self, config):
        super().__init__(config)
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids: Tensor | None = None, past=None, *, labels: Tensor | None = None,
                lm_labels: Tensor | None = None, return_dict: bool | None = None, logits_to_keep: int = 0,
                num_items_in_batch: int | Tensor | None = None, **kwargs) -> CausalLMOutputWithPast:
        """Next-token logits ``[..., T, vocab_size]``; with ``labels`` (or the 2019 ``lm_labels``),
        also the loss, labels being the inputs themselves (the shift happens inside).
        ``logits_to_keep=n`` computes the logits of the last ``n`` positions only (0: all), as in
        Hugging Face: a prompt's last position is all that generating from it needs.
        ``num_items_in_batch``: see ``lm_loss``."""
        labels = _labels(labels, lm_labels)
        _check_logits_to_keep(logits_to_keep, labels)
        body = self.transformer(input_ids, past, **kwargs)
        hidden = body.last_hidden_state
        logits = self.lm_head(hidden if logits_to_keep == 0 else hidden[..., -logits_to_keep:, :])
        out = CausalLMOutputWithPast(
            loss=lm_loss(logits, labels, num_items_in_batch) if labels is not None else None,
            logits=logits,
            past_key_values=body.past_key_values,
            hidden_states=body.hidden_states,
            attentions=body.attentions,
        )
        return out.to_tuple() if return_dict is False else out


def _check_logits_to_keep(logits_to_keep: object, labels: Tensor | None) -> None:
    if isinstance(logits_to_keep, bool) or not isinstance(logits_to_keep, int):
        raise ArgumentTypeError(f"logits_to_keep must be an int, got {type(logits_to_keep).__name__}")
    if logits_to_keep < 0:
        raise InvalidArgumentError(f"logits_to_keep must be >= 0 (0 keeps all), got {logits_to_keep}")
    if logits_to_keep and labels is not None:
        raise InvalidArgumentError("a loss needs every position's logits: pass labels with logits_to_keep=0")


class DoubleHeadsModel(_Generates, _Head):
    def __init__(self, config):
        # One score per choice, as in Hugging Face (which sets this on the config it is given;
        # here the caller's config is left alone).
        if config.num_labels != 1:
            config = config.replace(num_labels=1)
        super().__init__(config)
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        self.multiple_choice_head = SequenceSummary(config, config.n_embd)
        self.post_init()

    def forward(self, input_ids: Tensor | None = None, mc_token_ids: Tensor | None = None, *,
                labels: Tensor | None = None, lm_labels: Tensor | None = None, mc_labels: Tensor | None = None,
                return_dict: bool | None = None, **kwargs) -> DoubleHeadsModelOutput:
        """``input_ids`` is ``[batch, choices, T]``; ``mc_token_ids`` ``[batch, choices]`` gives the
        position whose hidden state each choice is scored from (default: the last).

        The second positional argument is ``mc_token_ids``, as on the 2019 hub page
        (``double_head_model(tokens_tensor, mc_token_ids)``); pass the cache by keyword.
        """
        body = self.transformer(input_ids, **kwargs)
        hidden = body.last_hidden_state  # [B, choices, T, C]
        if mc_token_ids is not None:
            check_choice_positions(mc_token_ids, hidden.shape[:-1])
        logits = self.lm_head(hidden)
        mc_logits = self.multiple_choice_head(hidden, mc_token_ids).squeeze(-1)  # [B, choices]
        labels = _labels(labels, lm_labels)
        mc_loss = None
        if mc_labels is not None:
            mc_loss = F.cross_entropy(mc_logits.reshape(-1, mc_logits.size(-1)).float(), mc_labels.reshape(-1))
        out = DoubleHeadsModelOutput(
            loss=lm_loss(logits, labels) if labels is not None else None,
            mc_loss=mc_loss,
            logits=logits,
            mc_logits=mc_logits,
            past_key_values=body.past_key_values,
            hidden_states=body.hidden_states,
            attentions=body.attentions,
        )
        return out.to_tuple() if return_dict is False else out


class ForSequenceClassification(_Head):
    def __init__(self, config):
        super().__init__(config)
        self.score = nn.Linear(config.n_embd, config.num_labels, bias=False)
        self.post_init()

    def forward(self, input_ids: Tensor | None = None, past=None, *, labels: Tensor | None = None,
                return_dict: bool | None = None, **kwargs) -> SequenceClassifierOutputWithPast:
        """One prediction per sequence, read at its last token that is not ``config.pad_token_id``
        (so left and right padding both work); without a pad id, batches must hold one row."""
        body = self.transformer(input_ids, past, **kwargs)
        logits = self.score(body.last_hidden_state)  # [B, T, labels]
        batch = logits.size(0)
        pad = self.config.pad_token_id
        if pad is None and batch != 1:
            raise InvalidArgumentError("sequence classification of batches needs config.pad_token_id to find each row's end")
        if pad is None or input_ids is None:
            last = torch.full((batch,), logits.size(1) - 1, device=logits.device)
        else:
            positions = torch.arange(input_ids.size(-1), device=logits.device)
            last = (positions * (input_ids != pad).to(logits.device)).argmax(-1)  # [B]
        pooled = logits[torch.arange(batch, device=logits.device), last]  # [B, labels]
        out = SequenceClassifierOutputWithPast(
            loss=self._loss(pooled, labels) if labels is not None else None,
            logits=pooled,
            past_key_values=body.past_key_values,
            hidden_states=body.hidden_states,
            attentions=body.attentions,
        )
        return out.to_tuple() if return_dict is False else out

    def _loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        problem = self.config.problem_type
        if problem is None:
            if self.config.num_labels == 1:
                problem = "regression"
            elif labels.dtype in (torch.long, torch.int):
                problem = "single_label_classification"
            else:
                problem = "multi_label_classification"
        if problem == "regression":
            return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
        if problem == "single_label_classification":
            return F.cross_entropy(logits.reshape(-1, self.config.num_labels), labels.reshape(-1))
        if problem == "multi_label_classification":
            return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        raise InvalidArgumentError(f"unknown config.problem_type {problem!r}")


class ForTokenClassification(_Head):
    def __init__(self, config):
        super().__init__(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else 0.1
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.n_embd, config.num_labels)
        self.post_init()

    def forward(self, input_ids: Tensor | None = None, *, labels: Tensor | None = None,
                return_dict: bool | None = None, **kwargs) -> TokenClassifierOutput:
        body = self.transformer(input_ids, **{**kwargs, "use_cache": False})  # it returns no cache
        logits = self.classifier(self.dropout(body.last_hidden_state))  # [B, T, labels]
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1).to(logits.device))
        out = TokenClassifierOutput(loss=loss, logits=logits, hidden_states=body.hidden_states,
                                    attentions=body.attentions)
        return out.to_tuple() if return_dict is False else out


class ForQuestionAnswering(_Head):
    def __init__(self, config):
        super().__init__(config)
        self.qa_outputs = nn.Linear(config.n_embd, 2)
        self.post_init()

    def forward(self, input_ids: Tensor | None = None, *, start_positions: Tensor | None = None,
                end_positions: Tensor | None = None, return_dict: bool | None = None,
                **kwargs) -> QuestionAnsweringModelOutput:
        body = self.transformer(input_ids, **{**kwargs, "use_cache": False})  # it returns no cache
        start_logits, end_logits = self.qa_outputs(body.last_hidden_state).unbind(-1)  # each [B, T]
        loss = None
        if start_positions is not None and end_positions is not None:
            ignored = start_logits.size(1)  # spans outside the input are clamped here and ignored
            start = start_positions.reshape(-1).clamp(0, ignored)
            end = end_positions.reshape(-1).clamp(0, ignored)
            loss = (F.cross_entropy(start_logits, start, ignore_index=ignored)
                    + F.cross_entropy(end_logits, end, ignore_index=ignored)) / 2
        out = QuestionAnsweringModelOutput(loss=loss, start_logits=start_logits.contiguous(),
                                           end_logits=end_logits.contiguous(), hidden_states=body.hidden_states,
                                           attentions=body.attentions)
        return out.to_tuple() if return_dict is False else out
