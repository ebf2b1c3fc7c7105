"""OpenAI GPT's (GPT-1's) tokenizer, identical to the original ``text_utils.TextEncoder`` of
openai/finetune-transformer-lm when ftfy and spaCy are installed:

1. ``ftfy.fix_text`` repairs mojibake and normalises the text;
2. ``text_standardize`` pads runs of punctuation with spaces and collapses whitespace;
3. spaCy's English tokenizer cuts words (a blank pipeline: spaCy 3 has no ``'en'`` shortcut,
   and the original used spaCy only as a tokenizer);
4. each word is lowercased *on its own* and BPE-encoded, the last symbol marked ``</w>``;
   a piece missing from the vocabulary becomes ``<unk>`` (id 0).

Two traps that other reimplementations fall into: lowercasing the text before spaCy changes
where spaCy splits, and the original's punctuation pattern is a non-raw string, so ``\\\\+``
there means one ``+`` and backslashes are not padded.

Without ftfy or spaCy it falls back, with one warning, to a BERT-style basic tokenizer
(lowercase, split punctuation and CJK characters) before the same BPE.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata

from .base import PreTrainedTokenizer
from .bpe import BoundedCache, merge_symbols
from .checks import TokenizerError
from .files import load_bpe_files

logger = logging.getLogger(__name__)

# The original's pattern as Python read it: its "\\+" became "\+", one literal plus (which the
# earlier "\++" always matches first), so backslashes are not padded.
ORIGINAL_PAD_PUNCTUATION = r"""(-+|~+|!+|"+|;+|\?+|\++|,+|\)+|\(+|\+|\/+|\*+|\[+|\]+|}+|{+|\|+|_+)"""
# The same matches, faster: a maximal run of one character from the set.
_PAD_PUNCTUATION = re.compile(r"""(([-~!";?+,)(/*\[\]}{|_])\2*)""")
# The original's \s*\n\s*, tried only where a whitespace run begins: the same matches, in linear
# time (the original rescans a run from each of its characters: minutes for 1 MB of spaces).
_NEWLINES = re.compile(r"(?<!\s)\s*\n\s*")
_SPACES = re.compile(r"[^\S\n]+")
_DASHES = str.maketrans({"—": "-", "–": "-", "―": "-", "´": "'"})
_CACHE_ENTRIES = 100_000
_UNKNOWN_ID = 0  # what a piece missing from the vocabulary becomes, as in the original


def text_standardize(text: str) -> str:
    """The original's clean-up before spaCy (it fixed spaCy's splits on the books corpus)."""
    text = text.translate(_DASHES).replace("…", "...")
    text = _PAD_PUNCTUATION.sub(r" \1 ", text)
    if "\n" not in text:  # then [^\S\n]+ is \s+, and str.split uses the same whitespace
        return " ".join(text.split())
    text = _NEWLINES.sub(" \n ", text)
    text = _SPACES.sub(" ", text)
    return text.strip()


class OpenAIGPTTokenizer(PreTrainedTokenizer):
    """GPT-1's tokenizer: ``vocab_file`` (token -> id JSON) and ``merges_file`` (BPE merges),
    under Hugging Face's names (``vocab.json``, ``merges.txt``) or OpenAI's
    (``encoder_bpe_40000.json``, ``vocab_40000.bpe``).

    ``use_spacy=False`` skips ftfy and spaCy even where installed (the basic fallback).
    """

    vocab_file_candidates = {"vocab_file": ("vocab.json", "encoder_bpe_40000.json"),
                             "merges_file": ("merges.txt", "vocab_40000.bpe")}
    model_max_length = 512

    def __init__(self, vocab_file: str | os.PathLike, merges_file: str | os.PathLike, unk_token: str | None = "<unk>",
                 use_spacy: bool = True, **kwargs):
        files = load_bpe_files(vocab_file, merges_file, header_line=True)
        self.encoder: dict[str, int] = files.encoder
        self.decoder = {i: t for t, i in self.encoder.items()}
        if not any(token.endswith("</w>") for token in self.encoder):
            raise TokenizerError(f"{vocab_file} has no word-final token (ending in '</w>'), which GPT-1's BPE ends "
                                 "every word with: it is not GPT-1's vocabulary (GPT-2's byte-level one?)")
        if _UNKNOWN_ID not in self.decoder:
            raise TokenizerError(f"{vocab_file} has no token with id {_UNKNOWN_ID}, the id GPT-1 gives every piece "
                                 "missing from the vocabulary (the original's '<unk>')")
        self.bpe_ranks = {pair: rank for rank, pair in enumerate(files.merges)}
        self.use_spacy = use_spacy
        self._exact: bool | None = None  # whether ftfy and spaCy run; decided on first use
        self._cache = BoundedCache(_CACHE_ENTRIES)  # chunk -> ids
        self._word_cache = BoundedCache(_CACHE_ENTRIES)  # lowercased word -> ids
        super().__init__(unk_token=unk_token, **kwargs)

    # -- encoding -------------------------------------------------------------------------------

    def _encode_ordinary(self, text: str) -> list[int]:
        if self._exact is None:
            self._exact = self._load_original_pipeline()
        if not self._exact:
            return self._words_ids(basic_words(text))
        # The original pipeline, made fast: after text_standardize the text holds single spaces,
        # and spaCy cuts each space-separated chunk on its own, so each chunk's ids are cached
        # and only chunks not seen before go to spaCy (in one call per text).
        standardized = text_standardize(self._fix_text(text))
        if not standardized:
            return []
        chunks = standardized.split(" ")
        known, fresh, unseen = {}, [], []
        for chunk in dict.fromkeys(chunks):
            if chunk in self._cache:
                known[chunk] = self._cache[chunk]
            elif self._single_word(chunk):
                known[chunk] = self._word_ids(chunk.lower())
                fresh.append(chunk)
            else:
                unseen.append(chunk)
        if unseen:
            known.update(zip(unseen, map(self._words_ids, self._spacy_chunks(unseen))))
        for chunk in fresh + unseen:  # the bounded cache may empty itself meanwhile; `known` holds them
            self._cache.put(chunk, known[chunk])
        return [i for chunk in chunks for i in known[chunk]]

    def _single_word(self, chunk: str) -> bool:
        """Chunks spaCy leaves whole without being asked: ASCII letters only, or ASCII digits only
        (no English prefix, suffix or infix rule matches either), unless a special case such as
        "cannot" or "gonna" splits them."""
        return chunk.isascii() and (chunk.isalpha() or chunk.isdigit()) and chunk not in self._special_cases

    def _words_ids(self, words: list[str]) -> list[int]:
        """The ids of words, each lowercased on its own (as the original does)."""
        return [i for word in words for i in self._word_ids(word.lower())]

    def _spacy_chunks(self, chunks: list[str]) -> list[list[str]]:
        """spaCy's words for each chunk, from one call over the chunks joined by spaces."""
        words: list[list[str]] = [[] for _ in chunks]
        ends, end = [], -1
        for chunk in chunks:
            end += len(chunk) + 1
            ends.append(end)  # index of the space after the chunk
        which = 0
        for token in self._spacy(" ".join(chunks)):
            while token.idx >= ends[which]:
                which += 1
            words[which].append(token.text)
        return words

    def __getstate__(self) -> dict:
        """The tokenizer without its loaded pipeline (spaCy's tokenizer, a function over ftfy),
        which a copy loads again on first use: DataLoader workers and ``datasets.map(num_proc=)``
        pickle tokenizers."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("_spacy", "_special_cases", "_fix_text")}
        state["_exact"] = None
        return state

    def _load_original_pipeline(self) -> bool:
        """ftfy and spaCy, imported on first use (slow imports); False where they are missing."""
        if not self.use_spacy:
            return False
        try:
            import ftfy
            import spacy
        except ImportError:
            logger.warning("ftfy or spaCy is not installed, so OpenAI GPT's tokenizer falls back to a "
                           "basic tokenizer, which differs from the original on some text; "
                           "pip install ftfy spacy for the exact original")
            return False
        self._spacy = spacy.blank("en").tokenizer
        self._special_cases = frozenset(self._spacy.rules)
        self._fix_text = lambda text: fix_text(text, ftfy)
        return True

    def _bpe_ids(self, word: str) -> list[int]:
        symbols = merge_symbols([*word[:-1], word[-1] + "</w>"], self.bpe_ranks)
        joined = " ".join(symbols)
        if joined == "\n  </w>":  # the original's own special case for a newline token
            joined = "\n</w>"
        return [self.encoder.get(piece, _UNKNOWN_ID) for piece in joined.split(" ")]

    def _word_ids(self, word: str) -> list[int]:
        word_ids = self._word_cache.get(word)
        if word_ids is None:
            word_ids = self._bpe_ids(word)
            self._word_cache.put(word, word_ids)
        return word_ids

    # -- decoding and saving --------------------------------------------------------------------

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Each word's end (``</w>``) becomes a space, but the last token's, as Hugging Face's
        decoder does; added tokens stand for themselves (``"hello</w> <new> world</w>"`` is
        ``"hello <new>world"``, as in transformers 5)."""
        text = "".join(tokens).replace("</w>", " ")
        return text[:-1] if tokens and tokens[-1].endswith("</w>") else text

    @classmethod
    def saved_settings(cls) -> set[str]:
        return super().saved_settings() | {"use_spacy"}


# ftfy changes ASCII text only through HTML entities, line breaks, terminal escapes and control
# characters; ASCII text without any of those comes back as it went in (tested against ftfy).
_FTFY_ASCII_TOUCHES = re.compile(r"[&\x00-\x08\x0b-\x1f\x7f]")


def fix_text(text: str, ftfy) -> str:
    """``ftfy.fix_text(text)``, skipping the lines it would return unchanged.

    As ftfy does, the text is fixed line by line (each line with its newline, lines longer than
    ``max_decode_length`` cut), and once a line contains ``<`` HTML entities are left alone in it
    and every later line.
    """
    if text.isascii() and _FTFY_ASCII_TOUCHES.search(text) is None:
        return text
    config = ftfy.TextFixerConfig(explain=False)
    out, start = [], 0
    while start < len(text):
        end = text.find("\n", start) + 1 or len(text)
        end = min(end, start + config.max_decode_length)
        line = text[start:end]
        if config.unescape_html == "auto" and "<" in line:
            config = config._replace(unescape_html=False)
        if line.isascii() and _FTFY_ASCII_TOUCHES.search(line) is None:
            out.append(line)
        else:
            out.append(ftfy.fix_and_explain(line, config)[0])
        start = end
    return "".join(out)


def basic_words(text: str) -> list[str]:
    """BERT's basic tokenizer: drop control characters, split on whitespace, punctuation and CJK
    characters, strip accents (the words are lowercased afterwards)."""
    words: list[str] = []
    for chunk in text.split():
        current = []
        for char in unicodedata.normalize("NFD", chunk):
            category = unicodedata.category(char)
            if category == "Mn" or char == "\ufffd" or (category.startswith("C") and char not in "\t\n\r"):
                continue
            if _is_punctuation(char, category) or _is_cjk(char):
                if current:
                    words.append("".join(current))
                    current = []
                words.append(char)
            else:
                current.append(char)
        if current:
            words.append("".join(current))
    return words


def _is_punctuation(char: str, category: str) -> bool:
    code = ord(char)
    return 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126 or category.startswith("P")


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in (
        (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))
