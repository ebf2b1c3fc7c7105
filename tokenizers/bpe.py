"""Byte-pair encoding, explained by its code.

A BPE vocabulary is learned by starting from single symbols and repeatedly merging the most
frequent adjacent pair into a new symbol; the merges file lists those pairs in the order they were
learned. To encode a word we replay the same process: look at every adjacent pair of symbols,
merge the pair that was learned first (lowest rank), and repeat until no adjacent pair is a known
merge. The symbols left are the tokens.

GPT-2 runs this on bytes: each of the 256 byte values is first mapped to a printable unicode
character (``bytes_to_unicode``), so the merges file can be text and every string can be encoded
without an unknown token. GPT-1 runs it on the characters of each lowercased word, the last one
marked with ``</w>``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

# Words longer than this are merged with a heap (n log n) instead of rescanning (n^2).
_LONG_WORD = 64


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character: printable Latin-1 bytes stand for
    themselves, the other 68 (control characters, space, ...) get code points from 256 upwards,
    in byte order. So a space is ``Ġ`` (U+0120) and a newline ``Ċ`` (U+010A)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def read_merges(lines: Iterable[str]) -> list[tuple[str, str]]:
    """Merge pairs from a merges file (``#version`` lines and blank lines skipped)."""
    merges = []
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        if not line or line.startswith("#version"):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"merges line {number} is not two symbols separated by one space: {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


def merge_symbols(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply the merges to ``symbols`` in rank order; every occurrence of a pair is merged, left
    to right, before any later pair."""
    if len(symbols) > _LONG_WORD:
        return _merge_with_heap(symbols, ranks)
    while len(symbols) > 1:
        best, best_rank = None, None
        for pair in zip(symbols, symbols[1:]):
            rank = ranks.get(pair)
            if rank is not None and (best_rank is None or rank < best_rank):
                best, best_rank = pair, rank
        if best is None:
            break
        first, second = best
        merged, i, n = [], 0, len(symbols)
        while i < n:
            if i < n - 1 and symbols[i] == first and symbols[i + 1] == second:
                merged.append(first + second)
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def _merge_with_heap(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """The same merges for long words: a heap of candidate pairs ordered by (rank, position) and
    a linked list of symbols. A pair popped after one of its symbols changed is stale and skipped.
    Ties in rank go left to right, as in the rescanning loop; a merge creates only pairs of higher
    rank, since a merge's parts were learned before it."""
    symbols = list(symbols)
    n = len(symbols)
    prev = list(range(-1, n - 1))
    nxt = list(range(1, n + 1))
    alive = [True] * n
    heap = [(ranks[(a, b)], i, a, b) for i, (a, b) in enumerate(zip(symbols, symbols[1:])) if (a, b) in ranks]
    heapq.heapify(heap)
    while heap:
        _, i, a, b = heapq.heappop(heap)
        j = nxt[i]
        if not alive[i] or j >= n or symbols[i] != a or symbols[j] != b:
            continue  # stale
        symbols[i] = a + b
        alive[j] = False
        nxt[i] = nxt[j]
        if nxt[j] < n:
            prev[nxt[j]] = i
        for left, right in ((prev[i], i), (i, nxt[i])):
            if left >= 0 and right < n:
                rank = ranks.get((symbols[left], symbols[right]))
                if rank is not None:
                    heapq.heappush(heap, (rank, left, symbols[left], symbols[right]))
    return [s for s, keep in zip(symbols, alive) if keep]


class BoundedCache(dict):
    """A dict that empties itself when full: bounded memory, no bookkeeping per hit."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def put(self, key, value) -> None:
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
