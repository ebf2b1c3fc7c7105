"""Reading and checking a BPE vocabulary (token -> id JSON) and its merges file.

A vocabulary that lacks a symbol the encoder can produce would otherwise load and encode into
``None`` ids, found only when a model is fed them; so every file is checked when the tokenizer
is made, and each error names the file and what was expected there.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

from ..download import atomic_write
from .checks import TokenizerError

_VOCAB_SHAPE = "a JSON object mapping each token (a string) to its id (a distinct integer >= 0)"


@dataclass(frozen=True)
class BPEFiles:
    """What a vocabulary and merges file hold, checked against each other."""

    encoder: dict[str, int]
    merges: list[tuple[str, str]]
    sha256: tuple[str, str]  # of the vocabulary file's bytes, then the merges file's


def load_bpe_files(vocab_file: str | os.PathLike, merges_file: str | os.PathLike, *,
                   header_line: bool) -> BPEFiles:
    """Both files, read and checked: every merge's two parts and its result are tokens of the
    vocabulary. ``header_line``: the merges file's first line is a header dropped whatever it
    holds, as GPT-1's original loader does (GPT-2's skips ``#version`` lines). Both may be one
    ``tokenizer.json`` (``tokenizer_json``)."""
    if os.fspath(vocab_file) == os.fspath(merges_file) and os.path.basename(vocab_file) == TOKENIZER_JSON:
        return tokenizer_json(vocab_file)
    vocab_bytes, merges_bytes = _read_bytes(vocab_file), _read_bytes(merges_file)
    encoder = parse_vocab(vocab_file, _utf8(vocab_file, vocab_bytes))
    merges = parse_merges(merges_file, _utf8(merges_file, merges_bytes), header_line=header_line)
    digests = (hashlib.sha256(vocab_bytes).hexdigest(), hashlib.sha256(merges_bytes).hexdigest())
    return _belonging(encoder, merges, vocab_file, merges_file, digests)


TOKENIZER_JSON = "tokenizer.json"
_TOKENIZER_JSON_SHAPE = ('a Hugging Face tokenizer.json whose "model" is a BPE model with "vocab" (token -> id) '
                         'and "merges" ("left right" strings or [left, right] pairs)')


def tokenizer_json(path: str | os.PathLike) -> BPEFiles:
    """The vocabulary and merges of a Hugging Face ``tokenizer.json`` (what transformers 5 saves
    in place of ``vocab.json`` and ``merges.txt``): its BPE model's ``vocab`` and ``merges``,
    checked as the two files are."""
    data = _read_bytes(path)
    model = parse_json_object(path, _utf8(path, data), _TOKENIZER_JSON_SHAPE).get("model")
    if not isinstance(model, dict) or model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict) \
            or not isinstance(model.get("merges"), list):
        raise TokenizerError(f"{path} holds no BPE model; expected {_TOKENIZER_JSON_SHAPE}")
    if not model["vocab"]:
        raise TokenizerError(f"{path} holds no tokens; expected {_TOKENIZER_JSON_SHAPE}")
    encoder = check_ids(path, model["vocab"])
    merges = _merge_pairs(path, ((f"merge {rank}", merge, merge.split(" ") if isinstance(merge, str) else merge)
                                 for rank, merge in enumerate(model["merges"], 1)))
    digest = hashlib.sha256(data).hexdigest()
    return _belonging(encoder, merges, path, path, (digest, digest))


def tokenizer_json_added(path: str | os.PathLike) -> list[dict]:
    """The tokens a ``tokenizer.json`` adds to its vocabulary (its ``added_tokens``: each a dict
    with ``id``, ``content`` and AddedToken's flags)."""
    return added_token_entries(path, read_json_object(path, _TOKENIZER_JSON_SHAPE).get("added_tokens", []),
                               "added_tokens")


def added_token_entries(path: str | os.PathLike, entries, where: str) -> list[dict]:
    """Added tokens as saved by Hugging Face: a list of ``{"id": ..., "content": ..., "special":
    ...}`` (tokenizer.json's ``added_tokens``) or the same by id (tokenizer_config.json's
    ``added_tokens_decoder``), checked: contents are str, ids distinct integers >= 0, flags
    (``special``, ``lstrip``...) booleans."""
    if isinstance(entries, dict):
        entries = [{**entry, "id": int(key) if key.isdecimal() and key.isascii() else key}
                   if isinstance(entry, dict) else entry for key, entry in entries.items()]
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("content"), str)
                                                for e in entries):
        raise TokenizerError(f"{path}: {where} is not a list of {{\"id\": ..., \"content\": ...}}")
    check_ids(path, {e["content"]: e.get("id") for e in entries})
    for entry in entries:
        wrong = [flag for flag in _ADDED_TOKEN_FLAGS if not isinstance(entry.get(flag, False), bool)]
        if wrong:
            raise TokenizerError(f"{path}: {where} gives {entry['content']!r} a {wrong[0]} of "
                                 f"{entry[wrong[0]]!r}; expected true or false")
    return entries


_ADDED_TOKEN_FLAGS = ("special", "lstrip", "rstrip", "single_word", "normalized")


def _belonging(encoder: dict[str, int], merges: list[tuple[str, str]], vocab_file, merges_file,
               digests: tuple[str, str]) -> BPEFiles:
    """The vocabulary and merges, refused unless every merge's parts and result are tokens."""
    symbols = {symbol for left, right in merges for symbol in (left, right, left + right)}
    if not symbols <= encoder.keys():  # then find the first merge at fault, for the message
        for rank, (left, right) in enumerate(merges):
            for role, symbol in (("first part", left), ("second part", right), ("result", left + right)):
                if symbol not in encoder:
                        raise TokenizerError(f"{merges_file}: merge {rank + 1} ({left} {right}) has a {role} "
                                         f"{symbol!r} that is not a token of {vocab_file}; the two files do not "
                                         "belong together")
    return BPEFiles(encoder, merges, digests)


def write_bpe_files(folder: str | os.PathLike, encoder: dict[str, int],
                    merges: list[tuple[str, str]], prefix: str = "") -> tuple[str, str]:
    """``vocab.json`` and ``merges.txt`` (with the ``#version`` line GPT-2's files have), in
    Hugging Face's layout, each written atomically; their paths."""
    vocab_path = os.path.join(folder, prefix + "vocab.json")
    merges_path = os.path.join(folder, prefix + "merges.txt")
    atomic_write(vocab_path, (json.dumps(encoder, ensure_ascii=False) + "\n").encode("utf-8"))
    atomic_write(merges_path, ("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)).encode("utf-8"))
    return vocab_path, merges_path


def require_tokens(vocab_file: str | os.PathLike, encoder: dict[str, int], tokens: list[str], why: str) -> None:
    """Refuse a vocabulary without each of ``tokens`` (the symbols its encoder emits)."""
    missing = [token for token in tokens if token not in encoder]
    if missing:
        raise TokenizerError(f"{vocab_file} lacks {len(missing)} of the {len(tokens)} {why} "
                             f"(first missing: {missing[0]!r})")


def parse_vocab(path: str | os.PathLike, text: str) -> dict[str, int]:
    """The token -> id mapping, refused unless it is exactly ``_VOCAB_SHAPE``."""
    vocab = parse_json_object(path, text, _VOCAB_SHAPE)
    if not vocab:
        raise TokenizerError(f"{path} holds no tokens; expected {_VOCAB_SHAPE}")
    return check_ids(path, vocab)


def read_json_object(path: str | os.PathLike, shape: str) -> dict:
    """A JSON object from a file (a tokenizer's settings or its added tokens)."""
    return parse_json_object(path, _utf8(path, _read_bytes(path)), shape)


def parse_json_object(path: str | os.PathLike, text: str, shape: str) -> dict:
    """``text`` (read from ``path``) as a JSON object with no key twice; ``shape`` says what the
    object should be, for the errors."""
    if not text.strip():
        raise TokenizerError(f"{path} is empty; expected {shape}")
    try:
        value = json.loads(text, object_pairs_hook=_no_repeated_keys)
    except (json.JSONDecodeError, RecursionError) as err:
        raise TokenizerError(f"{path} is not JSON ({_reason(err)}); expected {shape}") from None
    except _RepeatedKey as err:
        raise TokenizerError(f"{path} lists the key {err.args[0]!r} twice; expected {shape}") from None
    if not isinstance(value, dict):
        raise TokenizerError(f"{path} holds a JSON {type(value).__name__}; expected {shape}")
    return value


def check_ids(path: str | os.PathLike, tokens: dict) -> dict[str, int]:
    """Refuse a token -> id mapping whose ids are not distinct integers >= 0."""
    ids = tokens.values()
    if {type(i) for i in ids} <= {int} and min(ids, default=0) >= 0 and len(set(ids)) == len(ids):
        return tokens  # the common case, checked at C speed; the loop below finds the culprit
    holders: dict[int, str] = {}
    for token, index in tokens.items():
        if type(index) is not int or index < 0:
            raise TokenizerError(f"{path} gives the token {token!r} the id {index!r}; expected {_VOCAB_SHAPE}")
        if holders.setdefault(index, token) != token:
            raise TokenizerError(f"{path} gives the id {index} to both {holders[index]!r} and {token!r}; "
                                 f"expected {_VOCAB_SHAPE}")
    return tokens


def parse_merges(path: str | os.PathLike, text: str, *, header_line: bool) -> list[tuple[str, str]]:
    """The merge pairs, one ``left right`` per line in the order they were learned. Blank lines
    are skipped (the final newline leaves one); a pair listed twice is refused, since only one of
    its ranks could count."""
    if not text.strip():
        raise TokenizerError(f"{path} is empty; expected a '#version' line, then one merge "
                             "('left right') per line")
    lines = text.split("\n")
    first = 0
    if header_line:
        if not lines[0].startswith("#"):
            raise TokenizerError(f"{path}: line 1 is {lines[0][:60]!r}, not the '#version' header that GPT-1's "
                                 "loader drops (the original drops line 1 whatever it holds, so a first merge "
                                 "there would be lost)")
        first = 1
    stripped = ((number, line.rstrip("\r")) for number, line in enumerate(lines[first:], first + 1))
    return _merge_pairs(path, ((f"line {number}", line, line.split(" ")) for number, line in stripped
                               if line and not (line.startswith("#version") and not header_line)))


def _merge_pairs(path: str | os.PathLike, entries) -> list[tuple[str, str]]:
    """The merges of ``(where, as written, parts)`` entries in rank order, each two non-empty
    symbols; a pair listed twice is refused, since only one of its ranks could count."""
    merges, seen = [], set()
    for where, written, parts in entries:
        if not isinstance(parts, list) or len(parts) != 2 or not all(isinstance(x, str) and x for x in parts):
            raise TokenizerError(f"{path}: {where} is not two symbols separated by one space: {str(written)[:60]!r}")
        pair = (parts[0], parts[1])
        if pair in seen:
            raise TokenizerError(f"{path}: {where} repeats the merge {written!r}")
        seen.add(pair)
        merges.append(pair)
    return merges


class _RepeatedKey(Exception):
    pass


def _no_repeated_keys(pairs: list[tuple[str, object]]) -> dict:
    mapping = dict(pairs)
    if len(mapping) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _RepeatedKey(key)
            seen.add(key)
    return mapping


def _read_bytes(path: str | os.PathLike) -> bytes:
    with open(path, "rb") as f:  # a missing file raises FileNotFoundError, which names it
        return f.read()


def _utf8(path: str | os.PathLike, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TokenizerError(f"{path} is not UTF-8 text: byte {err.start} is {data[err.start:err.start + 1]!r}; "
                             "expected a UTF-8 vocabulary file") from None


def _reason(err: Exception) -> str:
    return "nested too deeply" if isinstance(err, RecursionError) else str(err)
