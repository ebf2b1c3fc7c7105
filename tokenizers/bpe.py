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

# Words longer than this are merged with a heap (n log n) instead of rescanning (n^2).
_LONG_WORD = 64
_NEVER = 1 << 62  # the rank of a pair that is not a merge


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


def merge_symbols(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply the merges to ``symbols`` in rank order, every occurrence of a pair left to right
    before any later pair.

    One merge at a time: the lowest-ranked adjacent pair is merged where it first occurs, and only
    the two pairs beside it change rank. A merge only creates pairs of higher rank (its parts were
    learned before it), so the next lowest is the same pair's next occurrence, if any, and a run
    like ``a a a`` merges as ``aa a``, as a left-to-right pass would.
    """
    if len(symbols) > _LONG_WORD:
        return _merge_with_heap(symbols, ranks)
    symbols = list(symbols)
    get = ranks.get
    pair_ranks = [get(pair, _NEVER) for pair in zip(symbols, symbols[1:])]
    while pair_ranks:
        best = min(pair_ranks)
        if best == _NEVER:
            break
        at = pair_ranks.index(best)
        merged = symbols[at] + symbols[at + 1]
        symbols[at:at + 2] = (merged,)
        del pair_ranks[at]
        if at:
            pair_ranks[at - 1] = get((symbols[at - 1], merged), _NEVER)
        if at < len(pair_ranks):
            pair_ranks[at] = get((merged, symbols[at + 1]), _NEVER)
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
