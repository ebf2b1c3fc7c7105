"""Saving a tokenizer in Hugging Face's layout and loading it back (or from a name, through the
download layer): the vocabulary files, ``tokenizer_config.json``, ``special_tokens_map.json`` and
``added_tokens.json``."""

from __future__ import annotations

import inspect
import json
import os
from typing import Any

from ..download import atomic_write, download_options, resolve_file
from ..errors import UnknownArgumentError
from .checks import MATCH_FLAGS
from .files import (TOKENIZER_JSON, added_token_entries, check_ids, read_json_object, tokenizer_json_added,
                    write_bpe_files)

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
ADDED_TOKENS = "added_tokens.json"
SETTINGS_SHAPES = {TOKENIZER_CONFIG: "a JSON object of the tokenizer's settings",
                   ADDED_TOKENS: "a JSON object mapping each added token to its id"}


class Saving:
    """``save_pretrained`` and ``from_pretrained`` for a tokenizer that provides its ``encoder``
    and ``bpe_ranks``, ``vocab_file_candidates``, ``saved_settings`` and its special and added tokens."""

    def save_vocabulary(self, save_directory: str | os.PathLike, filename_prefix: str | None = None) -> tuple[str, str]:
        """``vocab.json`` and ``merges.txt`` (named ``{filename_prefix}-vocab.json`` ... with a prefix)."""
        merges = sorted(self.bpe_ranks, key=self.bpe_ranks.get)
        return write_bpe_files(save_directory, self.encoder, merges, f"{filename_prefix}-" if filename_prefix else "")

    def init_kwargs(self) -> dict[str, Any]:
        """The constructor arguments (besides the vocabulary files) that ``save_pretrained`` records:
        ``saved_settings``, the special tokens that are set."""
        values = {name: getattr(self, name) for name in sorted(self.saved_settings())}
        return {name: value for name, value in values.items() if value is not None or name not in SPECIAL_TOKEN_NAMES}

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
        config["added_tokens_decoder"] = self._added_tokens_records()
        for name, content in ((TOKENIZER_CONFIG, config), (SPECIAL_TOKENS_MAP, special), (ADDED_TOKENS, added)):
            path = os.path.join(save_directory, name)
            atomic_write(path, (json.dumps(content, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
            files.append(path)
        return tuple(files)

    def _added_tokens_records(self) -> dict[str, dict[str, Any]]:
        """Every added token as transformers records it in ``added_tokens_decoder``: by id, its
        content and AddedToken's flags (so that both libraries load which are special, and how
        they are matched)."""
        special = set(self.all_special_tokens)
        records = {}
        for index, token in sorted(self.added_tokens_decoder.items()):
            lstrip, rstrip, single_word = self._match_flags.get(token, (False, False, False))
            records[str(index)] = {"content": token, "lstrip": lstrip, "normalized": token not in special,
                                   "rstrip": rstrip, "single_word": single_word, "special": token in special}
        return records

    @classmethod
    def vocabulary_files(cls, name_or_path, fetch_options) -> dict[str, str]:
        """Find the vocabulary files under any of their known names, or, where there are none, a
        ``tokenizer.json`` that holds both (transformers 5 saves only that)."""
        try:
            return {arg: resolve_file(name_or_path, names, **fetch_options)
                    for arg, names in cls.vocab_file_candidates.items()}
        except FileNotFoundError as missing:
            try:
                both = resolve_file(name_or_path, [TOKENIZER_JSON], **fetch_options)
            except FileNotFoundError:
                raise missing from None
            return dict.fromkeys(cls.vocab_file_candidates, both)

    vocab_file_candidates: dict[str, tuple[str, ...]] = {}

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any):
        """A directory holding the vocabulary files (and, if saved by ``save_pretrained``, the
        tokenizer's settings), or a name; keywords override the saved settings."""
        fetch_options = download_options(kwargs)
        unknown = sorted(set(kwargs) - cls._settings_taken())
        if unknown:  # before any download
            raise UnknownArgumentError.naming(unknown, sorted(cls._settings_taken()), f"{cls.__name__}.from_pretrained")
        files = cls.vocabulary_files(name_or_path, fetch_options)
        settings, paths = {}, {}
        for name in (TOKENIZER_CONFIG, ADDED_TOKENS):
            try:
                paths[name] = resolve_file(name_or_path, [name], **fetch_options)
            except FileNotFoundError:
                continue
            settings[name] = read_json_object(paths[name], SETTINGS_SHAPES[name])
            if name == ADDED_TOKENS:
                check_ids(paths[name], settings[name])
        # Added tokens as records with their flags: transformers 4 keeps them in tokenizer_config.json
        # (beside added_tokens.json), transformers 5 in tokenizer.json only, also beside vocab.json.
        records = []
        if "added_tokens_decoder" in settings.get(TOKENIZER_CONFIG, {}):
            records = added_token_entries(paths[TOKENIZER_CONFIG], settings[TOKENIZER_CONFIG]["added_tokens_decoder"],
                                          "added_tokens_decoder")
        vocabulary = files[next(iter(files))]
        beside = os.path.join(name_or_path, TOKENIZER_JSON) if os.path.isdir(name_or_path) else None
        added_in = vocabulary if os.path.basename(vocabulary) == TOKENIZER_JSON else beside
        if not records and added_in is not None and os.path.isfile(added_in) and ADDED_TOKENS not in settings:
            records = tokenizer_json_added(added_in)
        init = {k: v for k, v in settings.get(TOKENIZER_CONFIG, {}).items() if k in cls.saved_settings()}
        init = {k: (v["content"] if isinstance(v, dict) and "content" in v else v) for k, v in {**init, **kwargs}.items()}
        additional = init.pop("additional_special_tokens", [])
        extra = settings.get(TOKENIZER_CONFIG, {}).get("extra_special_tokens")  # transformers 5's name for them
        if isinstance(extra, list) and "additional_special_tokens" not in kwargs:
            additional = [*additional, *(t for t in extra if isinstance(t, str) and t not in additional)]
        tokenizer = cls(**files, **init)
        # Saved added tokens under their saved ids: the records' first, with how each is matched
        # (transformers trusts them over added_tokens.json), then added_tokens.json's others; then
        # the special ones they include (transformers 5 says which only in the records).
        for record in sorted(records, key=lambda record: record["id"]):
            tokenizer._register(record["content"], record["id"], {flag: record.get(flag, False) for flag in MATCH_FLAGS})
        recorded = {record["content"] for record in records}
        for token, index in sorted(settings.get(ADDED_TOKENS, {}).items(), key=lambda item: item[1]):
            if token not in recorded:
                tokenizer._register(token, index)
        for name in SPECIAL_TOKEN_NAMES:
            if getattr(tokenizer, name) in tokenizer.added_tokens_encoder:
                tokenizer._register(getattr(tokenizer, name))
        named = {token for token in tokenizer._special.values() if token is not None}
        additional += [record["content"] for record in records if record.get("special")
                       and record["content"] not in named and record["content"] not in additional]
        for token in additional:  # one restored above keeps its flags; adding it again would reset them
            if token in tokenizer.added_tokens_encoder:
                tokenizer._mark_special(token)
            else:
                tokenizer.add_tokens(token, special_tokens=True)
        tokenizer.name_or_path = os.fspath(name_or_path)
        return tokenizer

    @classmethod
    def _settings_taken(cls) -> set[str]:
        """The keywords the class's constructors take, beside the vocabulary files."""
        names = set(SPECIAL_TOKEN_NAMES) | {"additional_special_tokens"}
        for klass in cls.__mro__:
            init = vars(klass).get("__init__")
            if init is not None:
                names |= {name for name, parameter in inspect.signature(init).parameters.items()
                          if parameter.kind is inspect.Parameter.KEYWORD_ONLY
                          or parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD}
        return names - {"self", *cls.vocab_file_candidates}

    @classmethod
    def saved_settings(cls) -> set[str]:
        return {*SPECIAL_TOKEN_NAMES, "additional_special_tokens", "padding_side", "truncation_side",
                "model_max_length", "parse_special_tokens"}
