"""A small BPE vocabulary learned on the spot, in either family's file format, so that
``example`` runs on a fresh clone without the network or the 1-2 MB real vocabularies."""

from __future__ import annotations

import re
import string
from collections import Counter
from pathlib import Path

import regex

from ..tokenizers.bpe import bytes_to_unicode
from ..tokenizers.files import write_bpe_files
from ..tokenizers.gpt2 import PATTERN

Word = tuple[str, ...]


def learn_merges(words: Counter[Word], count: int) -> list[tuple[str, str]]:
    """Up to ``count`` merges, each of the most frequent adjacent pair (ties: the first in order)."""
    merges: list[tuple[str, str]] = []
    for _ in range(count):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = max(pairs, key=lambda pair: (pairs[pair], pair))
        merges.append(best)
        merged: Counter[Word] = Counter()
        for word, n in words.items():
            merged[_merge(word, best)] += n
        words = merged
    return merges


def _merge(word: Word, pair: tuple[str, str]) -> Word:
    out, i = [], 0
    while i < len(word):
        if word[i:i + 2] == pair:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def _write(folder: Path, symbols: list[str], merges: list[tuple[str, str]]) -> Path:
    tokens = list(dict.fromkeys(symbols + ["".join(pair) for pair in merges]))
    write_bpe_files(folder, {t: i for i, t in enumerate(tokens)}, merges)
    return folder


def write_gpt2_vocabulary(folder: Path, text: str, merges: int = 60) -> Path:
    """Byte-level: every byte is a token, so any text encodes; plus ``<|endoftext|>``."""
    byte_chars = bytes_to_unicode()
    words = Counter(tuple(byte_chars[b] for b in piece.encode("utf-8")) for piece in regex.findall(PATTERN, text))
    base = [byte_chars[b] for b in range(256)]
    return _write(folder, base + ["<|endoftext|>"], learn_merges(words, merges))


def write_openai_gpt_vocabulary(folder: Path, text: str, merges: int = 60) -> Path:
    """Lowercased characters, each also as a word end (``a</w>``); anything else is ``<unk>``."""
    text = text.lower()
    words = Counter(tuple(word[:-1]) + (word[-1] + "</w>",) for word in re.findall(r"\w+|[^\w\s]+", text))
    chars = sorted(set(text + string.ascii_lowercase + string.digits + string.punctuation) - set(string.whitespace))
    return _write(folder, ["<unk>"] + chars + [c + "</w>" for c in chars], learn_merges(words, merges))
