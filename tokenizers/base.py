"""What GPT's and GPT-2's tokenizers share: special and added tokens, batching, padding,
truncation, decoding, and saving in Hugging Face's layout.

Special-token text inside user input (``"<|endoftext|>"``) is ordinary text unless
``parse_special_tokens=True`` is passed (or set on the tokenizer), as in OpenAI's encoders: text
from a user can then never inject a control token. Tokens added with ``add_tokens`` are always
matched in the text; that is what adding them is for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import regex

from ..download import atomic_write, download_options, resolve_file
from .checks import TokenizerError, TokenizerTypeError, check_text
from .files import check_ids, read_json_object

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
ADDED_TOKENS = "added_tokens.json"
TRUNCATION = ("longest_first", "only_first", "only_second", "do_not_truncate")
SETTINGS_SHAPES = {TOKENIZER_CONFIG: "a JSON object of the tokenizer's settings",
                   ADDED_TOKENS: "a JSON object mapping each added token to its id"}


class BatchEncoding(dict):
    """The tokenizer's output: a dict (``enc["input_ids"]``) whose keys read as attributes too."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device) -> BatchEncoding:
        return BatchEncoding({k: v.to(device) if hasattr(v, "to") else v for k, v in self.items()})


class PreTrainedTokenizer:
    """A BPE tokenizer's vocabulary, special tokens and the API around ``encode``/``decode``.

    Subclasses provide ``encoder`` (token -> id), ``decoder`` (id -> token), ``_encode_ordinary``
    (text without added tokens -> ids), ``_decode_tokens`` (base-vocabulary tokens -> text) and
    ``save_vocabulary``.
    """

    model_input_names = ("input_ids", "attention_mask")
    model_max_length = 1024
    encoder: dict[str, int]
    decoder: dict[int, str]

    def __init__(self, *, padding_side: str = "right", truncation_side: str = "right",
                 parse_special_tokens: bool = False, model_max_length: int | None = None,
                 additional_special_tokens: Sequence[str] = (), **special_tokens: str | None):
        unknown = set(special_tokens) - set(SPECIAL_TOKEN_NAMES)
        if unknown:
            raise TokenizerTypeError(f"unexpected keyword arguments: {', '.join(sorted(unknown))}")
        self.added_tokens_encoder: dict[str, int] = {}
        self.added_tokens_decoder: dict[int, str] = {}
        self._special: dict[str, str | None] = dict.fromkeys(SPECIAL_TOKEN_NAMES)
        self.additional_special_tokens: list[str] = []
        self._matchers: dict[bool, tuple] = {}
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.parse_special_tokens = parse_special_tokens
        if model_max_length is not None:
            self.model_max_length = model_max_length
        for name, token in special_tokens.items():
            setattr(self, name, token)
        for token in additional_special_tokens:
            self._register(token)
            if token not in self.additional_special_tokens:
                self.additional_special_tokens.append(token)

    # -- vocabulary and special tokens ----------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary, without added tokens."""
        return len(self.encoder)

    def __len__(self) -> int:
        return len(self.encoder) + sum(1 for t in self.added_tokens_encoder if t not in self.encoder)

    def get_vocab(self) -> dict[str, int]:
        return {**self.encoder, **self.added_tokens_encoder}

    @property
    def all_special_tokens(self) -> list[str]:
        tokens = [t for t in self._special.values() if t is not None] + self.additional_special_tokens
        return list(dict.fromkeys(tokens))

    @property
    def all_special_ids(self) -> list[int]:
        return [self._token_to_id(t) for t in self.all_special_tokens]

    def _register(self, token: str, index: int | None = None) -> int:
        """Give ``token`` an id: ``index`` when restoring a saved tokenizer, else its own where
        the vocabulary has it, else the next free one."""
        check_text(token, "a token")
        if not token:
            raise TokenizerError("an added token cannot be empty")
        if index is not None:
            holder = self.added_tokens_decoder.get(index, self.decoder.get(index, token))
            if holder != token:
                raise TokenizerError(f"added token {token!r} wants id {index}, which {holder!r} holds already")
        elif token in self.encoder:
            index = self.encoder[token]
        elif token in self.added_tokens_encoder:
            index = self.added_tokens_encoder[token]
        else:
            index = len(self)
        self.added_tokens_encoder[token] = index
        self.added_tokens_decoder[index] = token
        self._matchers.clear()
        return index

    def add_tokens(self, new_tokens: str | Iterable[str], special_tokens: bool = False) -> int:
        """Add tokens matched whole in the text; returns how many are new to the vocabulary.
        The model's embeddings must then grow to ``len(tokenizer)``."""
        if isinstance(new_tokens, str):
            new_tokens = [new_tokens]
        before = len(self)
        for token in new_tokens:
            self._register(token)
            if special_tokens and token not in self.all_special_tokens:
                self.additional_special_tokens.append(token)
        return len(self) - before

    def add_special_tokens(self, special_tokens_dict: dict[str, str | Sequence[str]]) -> int:
        """``{"pad_token": "<pad>", "additional_special_tokens": ["<sep>"]}``: returns how many are new."""
        before = len(self)
        for name, value in special_tokens_dict.items():
            if name == "additional_special_tokens":
                self.add_tokens(list(value), special_tokens=True)
            elif name in SPECIAL_TOKEN_NAMES:
                setattr(self, name, value)
                self._register(value)
            else:
                raise TokenizerError(f"unknown special token kind {name!r}; use one of {SPECIAL_TOKEN_NAMES} or additional_special_tokens")
        return len(self) - before

    def _token_to_id(self, token: str) -> int | None:
        if token in self.added_tokens_encoder:
            return self.added_tokens_encoder[token]
        if token in self.encoder:
            return self.encoder[token]
        unk = self._special["unk_token"]
        if unk is not None and unk != token:
            return self._token_to_id(unk)
        return None

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | None | list[int | None]:
        if isinstance(tokens, str):
            return self._token_to_id(tokens)
        return [self._token_to_id(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False) -> str | list[str]:
        if isinstance(ids, int) or (hasattr(ids, "dim") and ids.dim() == 0):
            return self._id_to_token(int(ids))
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._id_to_token(int(i)) for i in ids if int(i) not in skip]

    def _id_to_token(self, index: int) -> str:
        if index in self.added_tokens_decoder:
            return self.added_tokens_decoder[index]
        try:
            return self.decoder[index]
        except KeyError:
            raise TokenizerError(f"token id {index} is not in the vocabulary (ids run from 0 to {len(self) - 1})") from None

    # -- encoding -------------------------------------------------------------------------------

    def _encode_ordinary(self, text: str) -> list[int]:
        raise NotImplementedError

    def _prepare_text(self, text: str) -> str:
        return text

    def _matcher(self, parse_special: bool):
        """A pattern matching the tokens to take whole from the text, with their ids (None when
        there are none): added tokens always, special tokens only when parsing them."""
        if parse_special not in self._matchers:
            special = set(self.all_special_tokens)
            matchable = {t: i for t, i in self.added_tokens_encoder.items() if t not in special}
            if parse_special:
                matchable.update((t, self._token_to_id(t)) for t in special if self._token_to_id(t) is not None)
            pattern = None
            if matchable:  # longest first, so "<|endoftext|>x" cannot lose to a shorter prefix token
                pattern = regex.compile("|".join(regex.escape(t) for t in sorted(matchable, key=len, reverse=True)))
            self._matchers[parse_special] = (pattern, matchable)
        return self._matchers[parse_special]

    @staticmethod
    def _segments(text: str, pattern, matchable: dict[str, int]) -> list[tuple[str, int | None]]:
        """Split ``text`` at the tokens ``pattern`` matches: ``(text, None)`` for ordinary text,
        ``(token, id)`` for a matched token."""
        segments, start = [], 0
        for match in pattern.finditer(text):
            if match.start() > start:
                segments.append((text[start:match.start()], None))
            segments.append((match.group(), matchable[match.group()]))
            start = match.end()
        if start < len(text):
            segments.append((text[start:], None))
        return segments

    def _encode_text(self, text: str, parse_special_tokens: bool | None = None) -> list[int]:
        if text.__class__ is not str or not text.isascii():  # the common case costs two checks
            check_text(text)
        text = self._prepare_text(text)
        parse = self.parse_special_tokens if parse_special_tokens is None else parse_special_tokens
        pattern, matchable = self._matchers.get(parse) or self._matcher(parse)
        if pattern is None:
            return self._encode_ordinary(text)
        ids: list[int] = []
        for segment, token_id in self._segments(text, pattern, matchable):
            if token_id is None:
                ids += self._encode_ordinary(segment)
            else:
                ids.append(token_id)
        return ids

    def tokenize(self, text: str, parse_special_tokens: bool | None = None, **kwargs) -> list[str]:
        """The tokens of ``text`` as strings (GPT-2: ``"Ġworld"``; GPT: ``"world</w>"``)."""
        return [self._id_to_token(i) for i in self._encode_text(text, parse_special_tokens)]

    def build_inputs_with_special_tokens(self, ids: list[int], pair: list[int] | None = None) -> list[int]:
        """GPT and GPT-2 add no special tokens around their inputs."""
        return ids if pair is None else ids + pair

    def encode(self, text: str, text_pair: str | None = None, add_special_tokens: bool = True,
               max_length: int | None = None, stride: int = 0, truncation_strategy: str = "longest_first",
               truncation: bool | str | None = None, return_tensors: str | None = None,
               parse_special_tokens: bool | None = None, **kwargs):
        """Token ids of ``text`` (and ``text_pair``), truncated to ``max_length`` if given."""
        if text_pair is None and max_length is None and not truncation and return_tensors is None and not kwargs:
            ids = self._encode_text(text, parse_special_tokens)  # the common case, without batching
            return self.build_inputs_with_special_tokens(ids) if add_special_tokens else ids
        encoded = self(text, text_pair, add_special_tokens=add_special_tokens, max_length=max_length,
                       stride=stride, truncation=truncation if truncation is not None else (
                           truncation_strategy if max_length is not None else False),
                       return_tensors=return_tensors, parse_special_tokens=parse_special_tokens,
                       return_attention_mask=False, **kwargs)
        return encoded["input_ids"]

    def __call__(self, text: str | Sequence[str], text_pair: str | Sequence[str] | None = None, *,
                 add_special_tokens: bool = True, padding: bool | str = False, truncation: bool | str | None = None,
                 max_length: int | None = None, stride: int = 0, return_tensors: str | None = None,
                 return_attention_mask: bool | None = None, padding_side: str | None = None,
                 parse_special_tokens: bool | None = None, **kwargs) -> BatchEncoding:
        """Encode one text or a batch: ``input_ids`` and ``attention_mask``, padded and truncated
        as asked. ``padding``: False, True/``"longest"``, ``"max_length"``; ``padding_side``:
        ``"right"`` (default) or ``"left"`` (for generation)."""
        if kwargs:
            raise TokenizerTypeError(f"unexpected keyword arguments: {', '.join(sorted(kwargs))}")
        batched = not isinstance(text, str)
        texts = list(text) if batched else [text]
        pairs = (list(text_pair) if batched else [text_pair]) if text_pair is not None else [None] * len(texts)
        if len(pairs) != len(texts):
            raise TokenizerError(f"got {len(texts)} texts but {len(pairs)} text pairs")
        strategy = _truncation_strategy(truncation, max_length)
        if strategy != "do_not_truncate" and max_length is None:
            max_length = self.model_max_length
        if stride < 0 or (max_length is not None and stride >= max_length):
            raise TokenizerError(f"stride must be in [0, max_length), got {stride}")
        rows = []
        for first, second in zip(texts, pairs):
            ids = self._encode_text(first, parse_special_tokens)
            pair = self._encode_text(second, parse_special_tokens) if second is not None else None
            if strategy != "do_not_truncate":
                ids, pair = _truncate(ids, pair, max_length, strategy, self.truncation_side)
            rows.append(self.build_inputs_with_special_tokens(ids, pair) if add_special_tokens else ids + (pair or []))
        return self._batch(rows, padding, max_length, return_tensors, return_attention_mask, padding_side, batched)

    def _batch(self, rows, padding, max_length, return_tensors, return_attention_mask, padding_side, batched):
        if padding is True:
            padding = "longest"
        if padding not in (False, "do_not_pad", "longest", "max_length"):
            raise TokenizerError(f"padding must be False, True, 'longest' or 'max_length', got {padding!r}")
        side = padding_side or self.padding_side
        if side not in ("left", "right"):
            raise TokenizerError(f"padding_side must be 'left' or 'right', got {side!r}")
        masks = [[1] * len(row) for row in rows]
        if padding in ("longest", "max_length"):
            if self.pad_token_id is None:
                raise TokenizerError("padding needs a pad token, and this tokenizer has none: set "
                                 "tokenizer.pad_token = tokenizer.eos_token (or add one)")
            if padding == "max_length" and max_length is None:
                raise TokenizerError("padding='max_length' needs max_length")
            width = max_length if padding == "max_length" else max(map(len, rows), default=0)
            for i, row in enumerate(rows):
                fill = width - len(row)
                if side == "right":
                    rows[i], masks[i] = row + [self.pad_token_id] * fill, masks[i] + [0] * fill
                else:
                    rows[i], masks[i] = [self.pad_token_id] * fill + row, [0] * fill + masks[i]
        out = BatchEncoding(input_ids=rows if batched else rows[0])
        if return_attention_mask is not False:
            out["attention_mask"] = masks if batched else masks[0]
        if return_tensors is not None:
            if return_tensors != "pt":
                raise TokenizerError(f"return_tensors must be 'pt' or None, got {return_tensors!r}")
            import torch

            if len({len(row) for row in rows}) > 1:
                raise TokenizerError("the sequences have different lengths: pass padding=True to return one tensor")
            out = BatchEncoding({k: torch.tensor(v if batched else [v], dtype=torch.long) for k, v in out.items()})
        return out

    # -- decoding -------------------------------------------------------------------------------

    def _decode_tokens(self, tokens: list[str]) -> str:
        raise NotImplementedError

    def decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool = False,
               **kwargs) -> str:
        """Text of ``token_ids`` (a list, a 1-d tensor, or one id). Raises ``ValueError`` for ids
        outside the vocabulary."""
        if hasattr(token_ids, "tolist"):
            token_ids = token_ids.tolist()
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        pieces, run = [], []
        for index in token_ids:
            if isinstance(index, bool) or not isinstance(index, int):
                raise TokenizerError(f"token ids must be ints, got {index!r}")
            if index < 0:
                raise TokenizerError(f"token id {index} is negative")
            if index in skip:
                continue
            if index in self.added_tokens_decoder and self.added_tokens_decoder[index] not in self.encoder:
                pieces += [self._decode_tokens(run), self.added_tokens_decoder[index]]
                run = []
            else:
                run.append(self._id_to_token(index))
        text = "".join(pieces) + self._decode_tokens(run)
        return clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def batch_decode(self, sequences, **kwargs) -> list[str]:
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        return [self.decode(seq, **kwargs) for seq in sequences]

    # -- saving and loading ---------------------------------------------------------------------

    def save_vocabulary(self, save_directory: str | os.PathLike) -> tuple[str, ...]:
        raise NotImplementedError

    def init_kwargs(self) -> dict[str, Any]:
        """The constructor arguments (besides the vocabulary files) that ``save_pretrained`` records."""
        return {**{name: token for name, token in self._special.items() if token is not None},
                "additional_special_tokens": self.additional_special_tokens, "padding_side": self.padding_side,
                "truncation_side": self.truncation_side, "model_max_length": self.model_max_length,
                "parse_special_tokens": self.parse_special_tokens}

    def save_pretrained(self, save_directory: str | os.PathLike) -> tuple[str, ...]:
        """The vocabulary files, ``tokenizer_config.json``, ``special_tokens_map.json`` and
        ``added_tokens.json``, in the layout Hugging Face's tokenizers read."""
        os.makedirs(save_directory, exist_ok=True)
        files = list(self.save_vocabulary(save_directory))
        config = {"tokenizer_class": type(self).__name__, **self.init_kwargs()}
        special = {name: token for name, token in self._special.items() if token is not None}
        if self.additional_special_tokens:
            special["additional_special_tokens"] = self.additional_special_tokens
        added = {t: i for t, i in self.added_tokens_encoder.items() if t not in self.encoder}
        for name, content in ((TOKENIZER_CONFIG, config), (SPECIAL_TOKENS_MAP, special), (ADDED_TOKENS, added)):
            path = os.path.join(save_directory, name)
            atomic_write(path, (json.dumps(content, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
            files.append(path)
        return tuple(files)

    @classmethod
    def vocabulary_files(cls, name_or_path, fetch_options) -> dict[str, str]:
        """Find the vocabulary files under any of their known names."""
        return {arg: resolve_file(name_or_path, names, **fetch_options) for arg, names in cls.vocab_file_candidates.items()}

    vocab_file_candidates: dict[str, tuple[str, ...]] = {}

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any):
        """A directory holding the vocabulary files (and, if saved by ``save_pretrained``, the
        tokenizer's settings), or a name; keywords override the saved settings."""
        fetch_options = download_options(kwargs)
        files = cls.vocabulary_files(name_or_path, fetch_options)
        settings = {}
        for name in (TOKENIZER_CONFIG, ADDED_TOKENS):
            try:
                path = resolve_file(name_or_path, [name], **fetch_options)
            except FileNotFoundError:
                continue
            settings[name] = read_json_object(path, SETTINGS_SHAPES[name])
            if name == ADDED_TOKENS:
                check_ids(path, settings[name])
        init = {k: v for k, v in settings.get(TOKENIZER_CONFIG, {}).items() if k in cls.saved_settings()}
        init = {k: (v["content"] if isinstance(v, dict) and "content" in v else v) for k, v in {**init, **kwargs}.items()}
        additional = init.pop("additional_special_tokens", [])
        tokenizer = cls(**files, **init)
        # Saved added tokens first, under their saved ids; then the special ones they include.
        for token, index in sorted(settings.get(ADDED_TOKENS, {}).items(), key=lambda item: item[1]):
            tokenizer._register(token, index)
        for name in SPECIAL_TOKEN_NAMES:
            if getattr(tokenizer, name) in tokenizer.added_tokens_encoder:
                tokenizer._register(getattr(tokenizer, name))
        tokenizer.add_tokens(additional, special_tokens=True)
        return tokenizer

    @classmethod
    def saved_settings(cls) -> set[str]:
        return {*SPECIAL_TOKEN_NAMES, "additional_special_tokens", "padding_side", "truncation_side",
                "model_max_length", "parse_special_tokens"}


def _special_token_property(name: str) -> property:
    def get(self) -> str | None:
        return self._special[name]

    def set(self, value: str | None) -> None:
        if value is not None:
            check_text(value, name)
        self._special[name] = value
        self._matchers.clear()

    return property(get, set, doc=f"The {name.replace('_', ' ')} (settable).")


def _special_id_property(name: str) -> property:
    def get(self) -> int | None:
        token = self._special[name]
        return None if token is None else self._token_to_id(token)

    def set(self, value: int | None) -> None:
        self._special[name] = None if value is None else self._id_to_token(value)
        self._matchers.clear()

    return property(get, set, doc=f"The id of the {name.replace('_', ' ')}.")


for _name in SPECIAL_TOKEN_NAMES:
    setattr(PreTrainedTokenizer, _name, _special_token_property(_name))
    setattr(PreTrainedTokenizer, _name + "_id", _special_id_property(_name))


def _truncation_strategy(truncation: bool | str | None, max_length: int | None) -> str:
    if truncation is None:
        return "longest_first" if max_length is not None else "do_not_truncate"
    if truncation is True:
        return "longest_first"
    if truncation is False:
        return "do_not_truncate"
    if truncation not in TRUNCATION:
        raise TokenizerError(f"truncation must be a bool or one of {TRUNCATION}, got {truncation!r}")
    return truncation


def _truncate(ids: list[int], pair: list[int] | None, max_length: int, strategy: str, side: str):
    if max_length < 0:
        raise TokenizerError(f"max_length must be >= 0, got {max_length}")
    excess = len(ids) + len(pair or []) - max_length
    if excess <= 0:
        return ids, pair

    def cut(seq: list[int], n: int) -> list[int]:
        return seq[: len(seq) - n] if side == "right" else seq[max(n, 0):]

    if strategy == "only_second" or (strategy == "longest_first" and pair):
        if strategy == "only_second":
            if pair is None or len(pair) < excess:
                raise TokenizerError("only_second truncation cannot shorten the pair enough (or there is no pair)")
            return ids, cut(pair, excess)
        # As Hugging Face's tokenizers library: the shorter keeps at most half (the first counts as
        # the shorter on a tie), the longer keeps the rest.
        short = min(len(ids), len(pair))
        keep_short = min(short, max_length // 2)
        keep_long = max_length - keep_short
        keep_ids, keep_pair = (keep_long, keep_short) if len(ids) > len(pair) else (keep_short, keep_long)
        return cut(ids, len(ids) - keep_ids), cut(pair, len(pair) - keep_pair)
    if len(ids) < excess:
        raise TokenizerError("only_first truncation cannot shorten the first sequence enough")
    return cut(ids, excess), pair


_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
            (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def clean_up_tokenization(text: str) -> str:
    """Undo the spaces a word tokenizer puts before punctuation and contractions."""
    for before, after in _CLEANUP:
        text = text.replace(before, after)
    return text
