"""GPT-2's byte-level BPE tokenizer, identical to OpenAI's ``encoder.py``.

Text is cut into pieces by OpenAI's regular expression (contractions, runs of letters, of
digits, of other symbols, each with at most one leading space; runs of whitespace), each piece's
UTF-8 bytes are mapped to printable characters, and BPE merges them into tokens. Pieces recur, so
their ids are cached (boundedly).

With tiktoken installed and OpenAI's own vocabulary (checked by sha256), encoding is handed to
tiktoken, which the tests prove gives the same ids on the whole shared corpus; pure Python
remains the reference and the default everywhere else (``use_tiktoken=False`` forces it).
"""

from __future__ import annotations

import functools
import logging
import os

import regex

from ..download.names import OPENAI_GPT2_VOCAB_SHA256
from .base import PreTrainedTokenizer
from .bpe import BoundedCache, bytes_to_unicode, merge_symbols
from .checks import check_decode_errors
from .files import load_bpe_files, require_tokens

logger = logging.getLogger(__name__)

# OpenAI's pre-tokenizer (src/encoder.py).
PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# OpenAI's encoder.json and vocab.bpe, by sha256 (Hugging Face's vocab.json/merges.txt are the same bytes).
OPENAI_FILES = (OPENAI_GPT2_VOCAB_SHA256["encoder.json"], OPENAI_GPT2_VOCAB_SHA256["vocab.bpe"])
_CACHE_ENTRIES = 100_000
# tiktoken's regex engine overflows its backtracking stack (pyo3's PanicException, a BaseException)
# on one run of about 1,000,000 whitespace characters of any kind (found by experiment with
# tiktoken 0.14: 992,000 pass, 1,000,000 fail; runs of 4,000,000 letters, digits or punctuation
# pass). Runs of this many go to pure Python instead, with a tenfold margin.
TIKTOKEN_SPACE_RUN = 100_000
_CACHE_PIECE_CHARS = 256


def _may_hold_space_run(text: str, length: int) -> bool:
    """Whether ``text`` may hold a whitespace run of ``length`` characters: such a run covers two
    consecutive multiples of ``length // 2`` and all between, so only those are looked at
    (``isspace`` holds for every character the pattern's ``\\s`` matches, and U+001C..U+001F)."""
    step = max(1, length // 2)
    return any(text[i].isspace() and text[i + step].isspace() and text[i:i + step + 1].isspace()
               for i in range(0, len(text) - step, step))


@functools.lru_cache(maxsize=4)
def _long_space_run(length: int) -> regex.Pattern:
    """A whitespace run of at least ``length`` characters, found from its first one only."""
    return regex.compile(r"(?<!\s)\s{%d,}" % length)


class GPT2Tokenizer(PreTrainedTokenizer):
    """GPT-2's tokenizer: ``vocab_file`` (token -> id JSON) and ``merges_file`` (the BPE merges),
    under Hugging Face's names (``vocab.json``, ``merges.txt``) or OpenAI's (``encoder.json``,
    ``vocab.bpe``).

    ``errors`` is how bytes that end mid-character decode (``"replace"``, ``"ignore"``,
    ``"strict"``); ``add_prefix_space`` encodes text as if a space preceded it (a word then gets
    the same ids as in the middle of a sentence): as Hugging Face's tokenizers library does it,
    each run of text between added tokens that does not begin with a space gets one.
    """

    vocab_file_candidates = {"vocab_file": ("vocab.json", "encoder.json"), "merges_file": ("merges.txt", "vocab.bpe")}
    model_max_length = 1024

    def __init__(self, vocab_file: str | os.PathLike, merges_file: str | os.PathLike, errors: str = "replace",
                 unk_token: str | None = "<|endoftext|>", bos_token: str | None = "<|endoftext|>",
                 eos_token: str | None = "<|endoftext|>", pad_token: str | None = None,
                 add_prefix_space: bool = False, use_tiktoken: bool | None = None, **kwargs):
        files = load_bpe_files(vocab_file, merges_file, header_line=False)
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        require_tokens(vocab_file, files.encoder, list(self.byte_encoder.values()),
                       "byte-level symbols that GPT-2 encodes every byte with")
        self.encoder: dict[str, int] = files.encoder
        self.decoder = {i: t for t, i in self.encoder.items()}
        self.bpe_ranks = {pair: rank for rank, pair in enumerate(files.merges)}
        self.errors = check_decode_errors(errors)
        self.add_prefix_space = add_prefix_space
        self._pattern = regex.compile(PATTERN)
        self._cache = BoundedCache(_CACHE_ENTRIES)
        self._openai_vocabulary = files.sha256 == OPENAI_FILES
        self.use_tiktoken = use_tiktoken
        self._tiktoken = None
        super().__init__(unk_token=unk_token, bos_token=bos_token, eos_token=eos_token, pad_token=pad_token, **kwargs)

    # -- encoding -------------------------------------------------------------------------------

    def _prepare_text(self, text: str) -> str:
        return " " + text if self.add_prefix_space and text and text[0] != " " else text

    def _encode_ordinary(self, text: str) -> list[int]:
        # Chosen on first use and bound on the instance, so later calls go straight to it.
        self._encode_ordinary = self._encode_fast if self._accelerator() is not None else self._encode_pieces
        return self._encode_ordinary(text)

    def _encode_fast(self, text: str) -> list[int]:
        """tiktoken's ids, except for whitespace runs long enough to overflow its regex engine,
        which pure Python encodes. A run always begins a piece and, less its last character (which
        may join the next word), is a piece of its own, so the ids of the parts add up."""
        encode = self._tiktoken.encode_ordinary
        if len(text) < TIKTOKEN_SPACE_RUN or not _may_hold_space_run(text, TIKTOKEN_SPACE_RUN):
            return encode(text)  # normal text costs these tests only
        ids, start = [], 0
        for run in _long_space_run(TIKTOKEN_SPACE_RUN).finditer(text):
            end = run.end() if run.end() == len(text) else run.end() - 1
            ids += encode(text[start:run.start()]) + self._bpe_ids(text[run.start():end])
            start = end
        return ids + encode(text[start:])

    def _encode_pieces(self, text: str) -> list[int]:
        ids: list[int] = []
        cache = self._cache
        for piece in self._pattern.findall(text):
            piece_ids = cache.get(piece)
            if piece_ids is None:
                piece_ids = self._bpe_ids(piece)
                if len(piece) <= _CACHE_PIECE_CHARS:
                    cache.put(piece, piece_ids)
            ids += piece_ids
        return ids

    def _bpe_ids(self, piece: str) -> list[int]:
        """One piece: its UTF-8 bytes as byte-level symbols, merged, looked up."""
        symbols = list(piece.encode("utf-8").decode("latin-1").translate(self.byte_encoder))  # latin-1 code point -> symbol
        encoder = self.encoder  # holds every byte symbol and merge result (checked at load)
        return [encoder[symbol] for symbol in merge_symbols(symbols, self.bpe_ranks)]

    def _accelerator(self):
        """tiktoken over the same ranks, where it is installed and allowed (see the module doc)."""
        if self._tiktoken is None:
            self._tiktoken = False
            wanted = self._openai_vocabulary if self.use_tiktoken is None else self.use_tiktoken
            if wanted:
                try:
                    import tiktoken
                except ImportError:
                    if self.use_tiktoken:
                        raise
                else:
                    # the 256 byte tokens and one per merge; never special tokens such as <|endoftext|>
                    merged = 256 + len(self.bpe_ranks)
                    ranks = {bytes(self.byte_decoder[c] for c in token): i for token, i in self.encoder.items()
                             if i < merged}
                    pattern = PATTERN.replace("'s|'t|'re|'ve|'m|'ll|'d", "'(?:[sdmt]|ll|ve|re)")
                    self._tiktoken = tiktoken.Encoding("gpt2-hub", pat_str=pattern, mergeable_ranks=ranks,
                                                       special_tokens={})
        return self._tiktoken or None

    # -- decoding -------------------------------------------------------------------------------

    def _decode_tokens(self, tokens: list[str]) -> str:
        try:
            data = bytes(self.byte_decoder[c] for token in tokens for c in token)
        except KeyError:  # a character outside the byte alphabet stands for itself, as in transformers 5
            data = b"".join(bytes([self.byte_decoder[c]]) if c in self.byte_decoder else c.encode("utf-8", "replace")
                            for token in tokens for c in token)
        return data.decode("utf-8", errors=self.errors)

    # -- saving ---------------------------------------------------------------------------------

    @classmethod
    def saved_settings(cls) -> set[str]:
        return super().saved_settings() | {"errors", "add_prefix_space"}
