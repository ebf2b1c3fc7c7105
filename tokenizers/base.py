"""What GPT's and GPT-2's tokenizers share: the vocabulary, special and added tokens, encoding
and decoding (batching is tokenizers/batching.py, saving and loading tokenizers/saving.py).

Special-token text inside user input (``"<|endoftext|>"``) is ordinary text unless
``parse_special_tokens=True`` is passed (or set on the tokenizer), as in OpenAI's encoders: text
from a user can then never inject a control token. That holds for special tokens added later too
(``add_special_tokens``, ``add_tokens(..., special_tokens=True)``: chat markers need
``parse_special_tokens=True``). Tokens added with ``add_tokens`` as ordinary tokens are always
matched in the text; that is what adding them is for.

Tokens may be given as Hugging Face's ``AddedToken``: its ``special`` flag is kept, and
``lstrip``/``rstrip`` (the token takes the whitespace on its left or right with it) and
``single_word`` (matched only where no word character touches it) are honoured when matching.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence

import regex

from .batching import Batching, check_options
from .checks import MATCH_FLAGS, TokenizerError, TokenizerTypeError, check_text, parse_special, token_content
from .saving import SPECIAL_TOKEN_NAMES, Saving


class PreTrainedTokenizer(Batching, Saving):
    """A BPE tokenizer's vocabulary, special tokens and the API around ``encode``/``decode``.

    Subclasses provide ``encoder`` (token -> id), ``decoder`` (id -> token), ``_encode_ordinary``
    (text without added tokens -> ids), ``_decode_tokens`` (base-vocabulary tokens -> text) or
    their own ``convert_tokens_to_string``, and ``save_vocabulary``.
    """

    model_input_names = ("input_ids", "attention_mask")
    model_max_length = 1024
    is_fast = False  # no Rust tokenizer behind it: no offset mappings, word ids
    name_or_path = ""  # what from_pretrained was given
    encoder: dict[str, int]
    decoder: dict[int, str]

    def __init__(self, *, padding_side: str = "right", truncation_side: str = "right",
                 parse_special_tokens: bool = False, model_max_length: int | None = None,
                 additional_special_tokens: Sequence = (), **special_tokens):
        unknown = set(special_tokens) - set(SPECIAL_TOKEN_NAMES)
        if unknown:
            raise TokenizerTypeError(f"unexpected keyword arguments: {', '.join(sorted(unknown))}")
        self.added_tokens_encoder: dict[str, int] = {}
        self.added_tokens_decoder: dict[int, str] = {}
        self._special: dict[str, str | None] = dict.fromkeys(SPECIAL_TOKEN_NAMES)
        self.additional_special_tokens: list[str] = []
        self._matchers: dict[bool, tuple] = {}
        self._match_flags: dict[str, tuple[bool, bool, bool]] = {}  # token -> MATCH_FLAGS, where any is set
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.parse_special_tokens = parse_special_tokens
        if model_max_length is not None:
            self.model_max_length = model_max_length
        for name, token in special_tokens.items():
            setattr(self, name, token)
        self.add_tokens(list(additional_special_tokens), special_tokens=True)

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
    def special_tokens_map(self) -> dict[str, str | list[str]]:
        """The special tokens that are set, by kind (``{"eos_token": "<|endoftext|>", ...}``)."""
        found: dict[str, str | list[str]] = {k: v for k, v in self._special.items() if v is not None}
        if self.additional_special_tokens:
            found["additional_special_tokens"] = list(self.additional_special_tokens)
        return found

    @property
    def all_special_ids(self) -> list[int]:
        return [self._token_to_id(t) for t in self.all_special_tokens]

    def _register(self, token: str, index: int | None = None, flags: dict[str, bool] | None = None) -> int:
        """Give ``token`` an id: ``index`` when restoring a saved tokenizer, else its own where
        the vocabulary has it, else the next free one; ``flags`` (an AddedToken's) set how it is
        matched."""
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
        if flags is not None:
            matching = tuple(flags.get(name, False) for name in MATCH_FLAGS)
            if any(matching):
                self._match_flags[token] = matching
            else:
                self._match_flags.pop(token, None)
        self._matchers.clear()
        return index

    def add_tokens(self, new_tokens, special_tokens: bool = False) -> int:
        """Add tokens (str or ``AddedToken``) matched whole in the text; returns how many are new
        to the vocabulary. The model's embeddings must then grow to ``len(tokenizer)``. With
        ``special_tokens=True`` (or an AddedToken's ``special``) they are special: matched only
        with ``parse_special_tokens=True``, skipped by ``decode(skip_special_tokens=True)``."""
        if isinstance(new_tokens, (str, bytes)) or not isinstance(new_tokens, Iterable):
            new_tokens = [new_tokens]
        before = len(self)
        for token in new_tokens:
            content, flags = token_content(token)
            self._register(content, flags=flags)  # a str matches plainly again, as in transformers
            if special_tokens or flags.get("special"):
                self._mark_special(content)
        return len(self) - before

    def _mark_special(self, token: str) -> None:
        """Make an added token special (``additional_special_tokens``), unless it is already."""
        if token not in self.all_special_tokens:
            self.additional_special_tokens.append(token)

    def add_special_tokens(self, special_tokens_dict: dict[str, str | Sequence[str]]) -> int:
        """``{"pad_token": "<pad>", "additional_special_tokens": ["<sep>"]}``: returns how many are new."""
        before = len(self)
        for name, value in special_tokens_dict.items():
            if name == "additional_special_tokens":
                self.add_tokens(list(value), special_tokens=True)
            elif name in SPECIAL_TOKEN_NAMES:
                content, flags = token_content(value, name)
                setattr(self, name, content)
                self._register(content, flags=flags)
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
        """A run of ordinary text (between added tokens) as it is encoded."""
        return text

    def _matcher(self, parse_special: bool) -> list[tuple]:
        """The passes that take tokens whole from the text, in order: special tokens (only when
        parsing them), then the other added tokens in what is left, as Hugging Face's tokenizers
        take its unnormalized tokens before the rest. Each pass: a pattern, the ids, and the
        whitespace each token strips (``(lstrip, rstrip)``, where either is set)."""
        if parse_special not in self._matchers:
            special = set(self.all_special_tokens)
            ordinary = {t: i for t, i in self.added_tokens_encoder.items() if t not in special}
            passes = [ordinary]
            if parse_special:
                passes.insert(0, {t: self._token_to_id(t) for t in special if self._token_to_id(t) is not None})
            self._matchers[parse_special] = [self._matching_pass(matchable) for matchable in passes if matchable]
        return self._matchers[parse_special]

    def _matching_pass(self, matchable: dict[str, int]) -> tuple:
        # longest first, so "<|endoftext|>x" cannot lose to a shorter prefix token
        pattern = regex.compile("|".join(map(self._token_pattern, sorted(matchable, key=len, reverse=True))))
        strips = {t: flags[:2] for t, flags in self._match_flags.items() if t in matchable and any(flags[:2])}
        return pattern, matchable, strips

    def _token_pattern(self, token: str) -> str:
        single_word = self._match_flags.get(token, (False, False, False))[2]
        return r"(?<!\w)" + regex.escape(token) + r"(?!\w)" if single_word else regex.escape(token)

    @staticmethod
    def _segments(text: str, pattern, matchable: dict[str, int], strips: dict) -> list[tuple[str, int | None]]:
        """Split ``text`` at the tokens ``pattern`` matches: ``(text, None)`` for ordinary text,
        ``(token, id)`` for a matched token. A token that strips (``strips``) takes the whitespace
        beside it with it, up to the next or previous token, as Hugging Face's tokenizers do."""
        found = [(match.start(), match.end(), match.group()) for match in pattern.finditer(text)]
        segments, start = [], 0
        for i, (begin, end, token) in enumerate(found):
            lstrip, rstrip = strips.get(token, (False, False))
            while lstrip and begin > start and text[begin - 1].isspace():
                begin -= 1
            limit = found[i + 1][0] if i + 1 < len(found) else len(text)
            while rstrip and end < limit and text[end].isspace():
                end += 1
            if begin > start:
                segments.append((text[start:begin], None))
            segments.append((token, matchable[token]))
            start = end
        if start < len(text):
            segments.append((text[start:], None))
        return segments

    def _encode_text(self, text: str, parse_special_tokens: bool | None = None) -> list[int]:
        if text.__class__ is not str or not text.isascii():  # the common case costs two checks
            check_text(text)
        parse = self.parse_special_tokens if parse_special_tokens is None else parse_special_tokens
        passes = self._matchers.get(parse)
        if passes is None:
            passes = self._matcher(parse)
        if not passes:
            return self._encode_ordinary(self._prepare_text(text))
        segments = None
        for matching in passes:
            if segments is None:
                if matching[0].search(text) is not None:  # most texts hold no added token: one scan
                    segments = self._segments(text, *matching)
            else:
                segments = [piece for segment, token_id in segments for piece in (
                    self._segments(segment, *matching) if token_id is None else [(segment, token_id)])]
        if segments is None:
            return self._encode_ordinary(self._prepare_text(text))
        ids: list[int] = []
        for segment, token_id in segments:
            if token_id is None:
                ids += self._encode_ordinary(self._prepare_text(segment))
            else:
                ids.append(token_id)
        return ids

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False,
                 parse_special_tokens: bool | None = None, **kwargs) -> list[str]:
        """The tokens of ``text`` (and ``pair``) as strings (GPT-2: ``"Ġworld"``; GPT:
        ``"world</w>"``); GPT and GPT-2 add no special tokens."""
        parse_special_tokens = parse_special(parse_special_tokens, kwargs)
        check_options(kwargs)
        ids = self._encode_text(text, parse_special_tokens)
        if pair is not None:
            ids += self._encode_text(pair, parse_special_tokens)
        return [self._id_to_token(i) for i in ids]

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return len(self.build_inputs_with_special_tokens([], [] if pair else None))

    def get_special_tokens_mask(self, token_ids_0: list[int], token_ids_1: list[int] | None = None,
                                already_has_special_tokens: bool = False) -> list[int]:
        """1 for a special token, 0 for a token of the text: of ids that have them already (any
        special token's id), else of what ``build_inputs_with_special_tokens`` makes of them
        (which adds none)."""
        ids = token_ids_0 + (token_ids_1 or [])
        if not already_has_special_tokens:
            return [0] * len(ids)
        special = set(self.all_special_ids)
        return [int(i in special) for i in ids]

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
        if truncation is None and max_length is not None and kwargs.get("padding", False) is False:
            truncation = truncation_strategy  # transformers 4's name; with padding, max_length is the width
        encoded = self(text, text_pair, add_special_tokens=add_special_tokens, max_length=max_length,
                       stride=stride, truncation=truncation,
                       return_tensors=return_tensors, parse_special_tokens=parse_special_tokens,
                       return_attention_mask=False, **kwargs)
        return encoded["input_ids"]

    # -- decoding -------------------------------------------------------------------------------

    def _decode_tokens(self, tokens: list[str]) -> str:
        raise NotImplementedError

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """The text of ``tokens``; added tokens outside the vocabulary stand for themselves."""
        pieces, run = [], []
        for token in tokens:
            if token in self.added_tokens_encoder and token not in self.encoder:
                pieces += [self._decode_tokens(run), token]
                run = []
            else:
                run.append(token)
        return "".join(pieces) + self._decode_tokens(run)

    def decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool = False,
               **kwargs) -> str | list[str]:
        """Text of ``token_ids`` (a list, a 1-d tensor, or one id; of a batch, the list of each
        row's, as transformers 5 gives). Raises ``ValueError`` for ids outside the vocabulary."""
        if isinstance(token_ids, Mapping) and "input_ids" in token_ids:  # what the tokenizer returned
            token_ids = token_ids["input_ids"]
        if hasattr(token_ids, "tolist"):
            token_ids = token_ids.tolist()
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        if isinstance(token_ids, (list, tuple)) and token_ids and (isinstance(token_ids[0], (list, tuple))
                                                                  or getattr(token_ids[0], "ndim", 0) >= 1):  # rows of tensors
            return self.batch_decode(token_ids, skip_special_tokens=skip_special_tokens,
                                     clean_up_tokenization_spaces=clean_up_tokenization_spaces, **kwargs)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        tokens = []
        for index in token_ids:
            try:  # an int, or what stands for one: a NumPy integer, a 0-d integer tensor (list(ids[0]))
                if isinstance(index, bool):
                    raise TypeError
                index = operator.index(index)
            except TypeError:
                raise TokenizerError(f"token ids must be ints, got {index!r}") from None
            if index < 0:
                raise TokenizerError(f"token id {index} is negative")
            if index not in skip:
                tokens.append(self._id_to_token(index))
        text = self.convert_tokens_to_string(tokens)
        return clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def batch_decode(self, sequences, **kwargs) -> list[str]:
        if isinstance(sequences, Mapping) and "input_ids" in sequences:  # what the tokenizer returned
            sequences = sequences["input_ids"]
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        return [self.decode(seq, **kwargs) for seq in sequences]

def _special_token_property(name: str) -> property:
    def get(self) -> str | None:
        return self._special[name]

    def set(self, value) -> None:
        if value is not None:
            value = check_text(token_content(value, name)[0], name)
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


_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
            (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def clean_up_tokenization(text: str) -> str:
    """Undo the spaces a word tokenizer puts before punctuation and contractions."""
    for before, after in _CLEANUP:
        text = text.replace(before, after)
    return text
