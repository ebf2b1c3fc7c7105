"""Encoding several texts at once: pairs, truncation (as Hugging Face's tokenizers library
does it), padding on either side, attention masks and tensors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .checks import TokenizerError, TokenizerTypeError, check_count, parse_special

TRUNCATION = ("longest_first", "only_first", "only_second", "do_not_truncate")


class BatchEncoding(dict):
    """The tokenizer's output: a dict (``enc["input_ids"]``) whose keys read as attributes too."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device) -> BatchEncoding:
        return BatchEncoding({k: v.to(device) if hasattr(v, "to") else v for k, v in self.items()})


# transformers' options that this tokenizer has no output for: taken when off (scripts pass
# return_token_type_ids=False), refused by name when asked for; ``verbose`` is taken as it is.
_OFF_ONLY = ("return_token_type_ids", "return_overflowing_tokens", "return_special_tokens_mask",
             "return_offsets_mapping", "return_length", "is_split_into_words")


def check_options(kwargs: dict) -> None:
    """Refuse keywords no call takes, and transformers' options this tokenizer has no output for."""
    unknown = sorted(name for name in kwargs if name not in _OFF_ONLY and name != "verbose")
    if unknown:
        raise TokenizerTypeError(f"unexpected keyword arguments: {', '.join(unknown)}")
    asked = [name for name in _OFF_ONLY if kwargs.get(name)]
    if asked:
        raise TokenizerTypeError(f"{', '.join(f'{name}=True' for name in asked)}: this tokenizer gives input_ids and "
                                 "attention_mask only (GPT and GPT-2 take no token types; no offsets, overflow, "
                                 "lengths or special-token masks)")


class Batching:
    """``tokenizer(texts, ...)``, for a tokenizer that provides ``_encode_text``,
    ``build_inputs_with_special_tokens``, ``pad_token_id`` and the sides and lengths."""

    def __call__(self, text: str | Sequence[str], text_pair: str | Sequence[str] | None = None, *,
                 add_special_tokens: bool = True, padding: bool | str = False, truncation: bool | str | None = None,
                 max_length: int | None = None, stride: int = 0, return_tensors: str | None = None,
                 return_attention_mask: bool | None = None, padding_side: str | None = None,
                 pad_to_multiple_of: int | None = None, parse_special_tokens: bool | None = None,
                 **kwargs) -> BatchEncoding:
        """Encode one text or a batch: ``input_ids`` and ``attention_mask``, padded and truncated
        as asked. ``padding``: False, True/``"longest"``, ``"max_length"`` (the width rounded up
        to ``pad_to_multiple_of`` where given); ``padding_side``: ``"right"`` (default) or
        ``"left"`` (for generation)."""
        parse_special_tokens = parse_special(parse_special_tokens, kwargs)
        check_options(kwargs)
        batched = not isinstance(text, str)
        texts = list(text) if batched else [text]
        if batched and text_pair is None and texts and all(isinstance(t, (tuple, list)) and len(t) == 2 for t in texts):
            texts, text_pair = [t[0] for t in texts], [t[1] for t in texts]  # [(text, pair), ...], as transformers takes
        pairs = (list(text_pair) if batched else [text_pair]) if text_pair is not None else [None] * len(texts)
        if len(pairs) != len(texts):
            raise TokenizerError(f"got {len(texts)} texts but {len(pairs)} text pairs")
        if max_length is not None:
            max_length = check_count("max_length", max_length)
        stride = check_count("stride", stride)
        strategy = truncation_strategy(truncation, max_length, padding)
        if strategy != "do_not_truncate" and max_length is None:
            max_length = self.model_max_length
        truncating, padded = strategy != "do_not_truncate", padding not in (False, "do_not_pad")
        if pad_to_multiple_of and truncating and padded and max_length % pad_to_multiple_of:
            # transformers refuses it too: rows would pass max_length
            raise TokenizerError(f"truncation to max_length={max_length} and padding to a multiple of "
                                 f"pad_to_multiple_of={pad_to_multiple_of} disagree: rows would be longer than max_length")
        if truncating and stride and stride >= max_length:  # only overflow (not returned) uses it
            raise TokenizerError(f"stride must be in [0, max_length) when truncating, got {stride} for max_length={max_length}")
        rows = []
        for first, second in zip(texts, pairs):
            ids = self._encode_text(first, parse_special_tokens)
            pair = self._encode_text(second, parse_special_tokens) if second is not None else None
            if strategy != "do_not_truncate":
                ids, pair = truncate(ids, pair, max_length, strategy, self.truncation_side)
            rows.append(self.build_inputs_with_special_tokens(ids, pair) if add_special_tokens else ids + (pair or []))
        return self._batch(rows, padding, max_length, return_tensors, return_attention_mask, padding_side, batched,
                           multiple=pad_to_multiple_of)

    # Hugging Face's older names for calling the tokenizer on one text, or on several
    def encode_plus(self, text: str, text_pair: str | None = None, **kwargs) -> BatchEncoding:
        return self(text, text_pair, **kwargs)

    def batch_encode_plus(self, batch_text_or_text_pairs: Sequence, **kwargs) -> BatchEncoding:
        return self(list(batch_text_or_text_pairs), **kwargs)

    def pad(self, encoded_inputs, padding: bool | str = True, max_length: int | None = None,
            pad_to_multiple_of: int | None = None, return_tensors: str | None = None,
            return_attention_mask: bool | None = None, padding_side: str | None = None) -> BatchEncoding:
        """Pad encodings made before: a list of ``{"input_ids": [...], ...}`` (what Hugging Face's
        data collators hand over) or one dict of lists (or of one row). ``input_ids`` and the
        per-token rows beside them (``attention_mask``, ``token_type_ids``,
        ``special_tokens_mask``) are padded; other keys pass through, of their own dtype (tensors
        where ``return_tensors`` asks, so their rows must be as long as each other)."""
        if isinstance(encoded_inputs, (list, tuple)):
            if not all(isinstance(row, Mapping) for row in encoded_inputs):
                raise TokenizerTypeError("pad takes a list of dicts (encodings) or one dict of lists")
            keys = encoded_inputs[0].keys() if encoded_inputs else ["input_ids"]
            encoded_inputs = {k: [row[k] for row in encoded_inputs] for k in keys}
        if not isinstance(encoded_inputs, Mapping) or "input_ids" not in encoded_inputs:
            raise TokenizerTypeError("pad takes encodings with input_ids: a list of dicts or one dict of lists")
        if return_tensors is None:  # rows of tensors give tensors of their kind, as in transformers
            return_tensors = _tensor_kind(encoded_inputs["input_ids"])
        ids = _rows(encoded_inputs["input_ids"])
        batched = not (ids and not isinstance(ids[0], list))
        rows = ids if batched else [ids]
        beside = {}
        for key in _PADDED_BESIDE:
            if key in encoded_inputs:
                given = _rows(encoded_inputs[key])
                beside[key] = given if batched else [given]
                if [len(r) for r in beside[key]] != [len(r) for r in rows]:
                    raise TokenizerError(f"{key} and input_ids differ in length")
        out = self._batch([list(r) for r in rows], padding, max_length, return_tensors, return_attention_mask,
                          padding_side, batched, beside=beside, multiple=pad_to_multiple_of, batch_axis=batched)
        for key, value in encoded_inputs.items():  # the rest passes through, of its own dtype (float labels)
            if key not in ("input_ids", *_PADDED_BESIDE):
                if return_tensors is not None:
                    try:
                        value = tensor_maker(return_tensors, integers=False)(value)
                    except (ValueError, TypeError) as err:
                        raise TokenizerError(f"{key!r} cannot be made into a {return_tensors!r} tensor: {err}") from None
                out[key] = value
        return out

    def _batch(self, rows, padding, max_length, return_tensors, return_attention_mask, padding_side, batched,
               beside=None, multiple=None, batch_axis=True):
        """The ids' ``rows`` and their per-token companions (``beside``, by name: an attention
        mask, token types, special-tokens mask; the mask is all ones where not given), padded
        together as asked, each with its own value (``_PADDED_BESIDE``). One row (not
        ``batched``) is returned alone, as a tensor ``[1, n]`` with ``batch_axis``, else ``[n]``."""
        if multiple is not None and (isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1):
            raise TokenizerError(f"pad_to_multiple_of must be a positive int, got {multiple!r}")
        if padding is True:
            padding = "longest"
        if padding not in (False, "do_not_pad", "longest", "max_length"):
            raise TokenizerError(f"padding must be False, True, 'longest' or 'max_length', got {padding!r}")
        side = padding_side or self.padding_side
        if side not in ("left", "right"):
            raise TokenizerError(f"padding_side must be 'left' or 'right', got {side!r}")
        per_token = {"attention_mask": [[1] * len(row) for row in rows], **(beside or {})}
        if padding in ("longest", "max_length"):
            if self.pad_token_id is None:
                raise TokenizerError("padding needs a pad token, and this tokenizer has none: set "
                                 "tokenizer.pad_token = tokenizer.eos_token (or add one)")
            if padding == "longest":
                width = max(map(len, rows), default=0)
            else:  # as transformers, the model's length where none is given
                width = self.model_max_length if max_length is None else max_length
            if multiple is not None:
                width = -(-width // multiple) * multiple
            rows = [_fill(row, width, self.pad_token_id, side) for row in rows]
            per_token = {key: [_fill(list(r), width, _PADDED_BESIDE[key], side) for r in values]
                         for key, values in per_token.items()}
        if return_attention_mask is False and "attention_mask" not in (beside or {}):  # a given one is kept
            del per_token["attention_mask"]
        named = {"input_ids": rows, **per_token}
        out = BatchEncoding({key: values if batched else values[0] for key, values in named.items()})
        if return_tensors is not None:
            as_tensor = tensor_maker(return_tensors)
            if len({len(row) for row in rows}) > 1:
                raise TokenizerError("the sequences have different lengths: pass padding=True to return one tensor")
            out = BatchEncoding({k: as_tensor(v if batched or not batch_axis else [v]) for k, v in out.items()})
        return out


def tensor_maker(return_tensors: str, integers: bool = True):
    """The function that makes ``return_tensors``' kind of array, ``"pt"`` (PyTorch) or ``"np"``
    (NumPy), of int64 rows, or with ``integers=False`` of the values' own type (labels)."""
    if return_tensors == "pt":
        import torch

        return lambda rows: torch.as_tensor(rows, dtype=torch.long if integers else None)
    if return_tensors == "np":
        import numpy

        return lambda rows: numpy.asarray(rows, dtype=numpy.int64 if integers else None)
    raise TokenizerError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")


def truncation_strategy(truncation: bool | str | None, max_length: int | None, padding) -> str:
    """As in transformers, a ``max_length`` truncates when truncation is not said only where there
    is no padding (with padding it is the padded width, and longer rows stay whole)."""
    if truncation is None:
        return "longest_first" if max_length is not None and padding is False else "do_not_truncate"
    if truncation is True:
        return "longest_first"
    if truncation is False:
        return "do_not_truncate"
    if truncation not in TRUNCATION:
        raise TokenizerError(f"truncation must be a bool or one of {TRUNCATION}, got {truncation!r}")
    return truncation


def truncate(ids: list[int], pair: list[int] | None, max_length: int, strategy: str, side: str):
    excess = len(ids) + len(pair or []) - max_length
    if excess <= 0:
        return ids, pair

    def cut(seq: list[int], n: int) -> list[int]:
        return seq[: len(seq) - n] if side == "right" else seq[max(n, 0):]

    if strategy == "only_second" or (strategy == "longest_first" and pair):
        if strategy == "only_second":
            if pair is None or len(pair) <= excess:  # as Hugging Face's tokenizers: a pair keeps a token of each
                raise TokenizerError("only_second truncation cannot shorten the pair enough (or there is no pair)")
            return ids, cut(pair, excess)
        # As Hugging Face's tokenizers library: the shorter keeps at most half (the first counts as
        # the shorter on a tie), the longer keeps the rest.
        short = min(len(ids), len(pair))
        keep_short = min(short, max_length // 2)
        keep_long = max_length - keep_short
        keep_ids, keep_pair = (keep_long, keep_short) if len(ids) > len(pair) else (keep_short, keep_long)
        return cut(ids, len(ids) - keep_ids), cut(pair, len(pair) - keep_pair)
    if len(ids) < excess or (pair is not None and len(ids) == excess):
        raise TokenizerError("only_first truncation cannot shorten the first sequence enough")
    return cut(ids, excess), pair


def _tensor_kind(ids) -> str | None:
    """``"pt"`` or ``"np"`` where the ids (or their first row) are a PyTorch tensor or a NumPy array."""
    first = ids[0] if isinstance(ids, (list, tuple)) and ids else ids
    kind = type(first).__module__.split(".")[0]
    return {"torch": "pt", "numpy": "np"}.get(kind) if hasattr(first, "tolist") else None


def _rows(value) -> list:
    """Token ids (or a mask) as lists: from lists, tuples or tensors, one row or several."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return [v.tolist() if hasattr(v, "tolist") else list(v) if isinstance(v, (list, tuple)) else v for v in value]


# Per-token rows that go with the ids, and what pads them (transformers')
_PADDED_BESIDE = {"attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1}


def _fill(row: list, width: int, value, side: str) -> list:
    return row + [value] * (width - len(row)) if side == "right" else [value] * (width - len(row)) + row
