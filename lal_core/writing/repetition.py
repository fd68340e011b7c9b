"""How varied a sample is, and whether it loops: figures over one sample's BPE tokens.

distinct-n      unique n-grams / n-grams: 1.0 when no n-gram comes twice
repeated 4-grams the share of 4-grams that repeat an earlier 4-gram of the same sample
in a loop       the sample holds a stretch of 1 to LOOP_MAX_PERIOD tokens repeated back to
                back at least LOOP_MIN_REPEATS times and over at least LOOP_MIN_TOKENS
                tokens: `a man of a man of a man of a man` (the write-up's loop: period 3, 11
                tokens) counts; a refrain that comes back after other lines does not, nor
                does `a man of a man` once
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LOOP_MAX_PERIOD = 16
LOOP_MIN_REPEATS = 3
LOOP_MIN_TOKENS = 9


def ngrams(tokens: Sequence[int], n: int) -> list[tuple[int, ...]]:
    return list(zip(*(tokens[i:] for i in range(n)), strict=False))


def distinct(tokens: Sequence[int], n: int) -> float | None:
    """Unique n-grams over n-grams (None: the sample is shorter than n)."""
    grams = ngrams(tokens, n)
    return len(set(grams)) / len(grams) if grams else None


def repeated_share(tokens: Sequence[int], n: int = 4) -> float | None:
    """The share of n-grams that repeat an earlier n-gram of the same sample."""
    grams = ngrams(tokens, n)
    return 1 - len(set(grams)) / len(grams) if grams else None


@dataclass(frozen=True)
class Loop:
    start: int  # token index where the repeated stretch starts
    period: int  # tokens per repetition
    length: int  # tokens the stretch covers

    @property
    def repeats(self) -> float:
        return self.length / self.period


def find_loop(tokens: Sequence[int]) -> Loop | None:
    """The longest back-to-back repetition that counts as a loop (module docstring), or None."""
    t = np.asarray(tokens, dtype=np.int64)
    best: Loop | None = None
    for period in range(1, min(LOOP_MAX_PERIOD, len(t) // LOOP_MIN_REPEATS) + 1):
        # same[i]: token i + period repeats token i; a run of L such positions from i makes
        # t[i : i + L + period] periodic with this period.
        same = np.concatenate([[False], t[period:] == t[:-period], [False]])
        edges = np.flatnonzero(np.diff(same.astype(np.int8)))
        for start, end in zip(edges[::2], edges[1::2], strict=True):
            length = end - start + period
            counts = length >= max(LOOP_MIN_TOKENS, LOOP_MIN_REPEATS * period)
            if counts and (best is None or length > best.length):
                best = Loop(int(start), period, int(length))
    return best
