"""Memorisation: which parts of a sample are copied verbatim from the training tokens.

A suffix array of the training split (every suffix's start, in sorted order) finds, for each
position of a sample, the longest stretch from there that occurs verbatim anywhere in the
training tokens: a binary search for the position's suffix of the sample among the training
suffixes, then the longer common prefix with the two neighbours it lands between. From those
lengths:

    memorised 8-grams   the share of the sample's 8-grams that occur in the training split
    longest verbatim    the longest stretch of the sample found there (tokens, and its text)
    invented words      the share of the sample's words found nowhere in the training text: a
                        broken or made-up word ("thoust", "grac") where held-out text has only
                        the rare name or word the training text lacks

The array is built once per corpus by prefix doubling (sorting by the first 1, 2, 4, ... tokens)
in numpy, and cached beside the corpus's token cache (`<cache>.train-suffixes.npy`, 4 bytes a
training token), so later reports only load it.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from lal_core.data.corpus import Corpus
from lal_core.data.tokenizer import decode

NGRAM = 8
COPY_TOKENS = 50_000_000  # a training split up to this is searched in one bytes copy
WORDS_TOKENS = 10_000_000  # a training split up to this is read for its words (a few seconds)
WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")  # letters, with inner apostrophes: "look'd"


def words_of(text: str) -> list[str]:
    """The words of a text, lower-cased: "ROMEO" at a speech's head is "Romeo" in a line."""
    return [w.lower() for w in WORD.findall(text)]


def suffix_array(tokens: np.ndarray) -> np.ndarray:
    """The start of every suffix of `tokens`, in the suffixes' sorted order (int32 where it fits).

    Prefix doubling: after the round for k, rank[i] orders the suffixes by their first 2k
    tokens; a suffix that ends sorts before every longer one it is a prefix of.
    """
    n = len(tokens)
    rank = tokens.astype(np.int64)
    order = np.argsort(rank, kind="stable")
    k = 1
    while n:
        second = np.full(n, -1, dtype=np.int64)  # past the end: before every token
        second[: max(n - k, 0)] = rank[k:]
        order = np.lexsort((second, rank))
        key = rank[order] * (int(rank.max()) + 2) + (second[order] + 1)
        new_rank = np.empty(n, dtype=np.int64)
        new_rank[order] = np.cumsum(np.concatenate([[0], key[1:] != key[:-1]]))
        rank = new_rank
        if rank[order[-1]] == n - 1 or k >= n:  # every suffix has its own rank: sorted
            break
        k *= 2
    return order.astype(np.int32 if n < 2**31 else np.int64)


@dataclass(frozen=True)
class Verbatim:
    """What of one sample is found verbatim in the training tokens."""

    tokens: int  # the sample's length
    memorised: float | None  # share of its 8-grams found (None: shorter than 8 tokens)
    longest: int  # tokens in its longest verbatim stretch
    longest_text: str  # that stretch's text
    invented: float | None = None  # share of its whole words not in the training text


class VerbatimIndex:
    """The training tokens and their suffix array: `match_lengths` and `verbatim` search them."""

    def __init__(self, tokens: np.ndarray, suffixes: np.ndarray) -> None:
        self.tokens = np.asarray(tokens)
        self.suffixes = suffixes
        # Big-endian 16-bit tokens compare as bytes in token order: slices compare in C. A
        # large split (a memory-mapped dataset) is not copied whole: each suffix compared is
        # converted as it is read (a search reads some 30 per position of a sample).
        small = len(self.tokens) <= COPY_TOKENS
        self._bytes = self.tokens.astype(">u2").tobytes() if small else None

    @classmethod
    def of(cls, tokens: np.ndarray) -> VerbatimIndex:
        return cls(tokens, suffix_array(np.asarray(tokens)))

    @classmethod
    def for_corpus(cls, corpus: Corpus) -> VerbatimIndex:
        """The index of a corpus's training split, built once and cached beside its tokens."""
        train = np.asarray(corpus.train)
        path = index_path(corpus)
        if path is not None and path.is_file():
            suffixes = np.load(path, mmap_mode="r")
            if len(suffixes) == len(train):
                return cls(train, suffixes)
        index = cls.of(train)
        if path is not None:
            _save(path, index.suffixes)  # a cache: not being able to write it costs only time
        return index

    @cached_property
    def vocabulary(self) -> frozenset[str] | None:
        """Every word of the training text, read on first use; None for a split too large to
        read in a few seconds (then no sample's invented words are counted)."""
        if len(self.tokens) > WORDS_TOKENS:
            return None
        return frozenset(words_of(decode(self.tokens.tolist())))

    def invented(self, sample: Sequence[int]) -> float | None:
        """The share of the sample's words that the training text never uses. Its first and
        last words are left out: the prompt or the token limit may have cut them."""
        inner = words_of(decode(list(sample)))[1:-1]
        if not inner or self.vocabulary is None:
            return None
        return sum(w not in self.vocabulary for w in inner) / len(inner)

    def _suffix(self, start: int, length: int) -> bytes:
        if self._bytes is None:
            return self.tokens[start : start + length].astype(">u2").tobytes()
        return self._bytes[2 * start : 2 * (start + length)]

    def longest_match(self, query: bytes) -> int:
        """Tokens of `query` (big-endian 16-bit bytes) found verbatim from its start."""
        n = len(query) // 2
        lo, hi = 0, len(self.suffixes)
        while lo < hi:  # the first suffix not below the query
            mid = (lo + hi) // 2
            if self._suffix(int(self.suffixes[mid]), n) < query:
                lo = mid + 1
            else:
                hi = mid
        best = 0
        for i in (lo - 1, lo):  # the query sorts between these two: its best match is one
            if 0 <= i < len(self.suffixes):
                best = max(best, _common_tokens(self._suffix(int(self.suffixes[i]), n), query))
        return best

    def match_lengths(self, sample: Sequence[int]) -> np.ndarray:
        """For each position i of the sample, the length of the longest stretch from i that
        occurs verbatim in the training tokens."""
        data = np.asarray(sample, dtype=">u2").tobytes()
        return np.array([self.longest_match(data[2 * i :]) for i in range(len(sample))], int)

    def verbatim(self, sample: Sequence[int]) -> Verbatim:
        if not len(sample):
            return Verbatim(0, None, 0, "")
        lengths = self.match_lengths(sample)
        grams = len(sample) - NGRAM + 1
        memorised = float(np.mean(lengths[:grams] >= NGRAM)) if grams > 0 else None
        start = int(np.argmax(lengths))
        longest = int(lengths[start])
        return Verbatim(
            len(sample),
            memorised,
            longest,
            decode(list(sample[start : start + longest])),
            self.invented(sample),
        )


def _common_tokens(a: bytes, b: bytes) -> int:
    """Tokens the two big-endian 16-bit strings share from their start."""
    n = min(len(a), len(b)) // 2
    x = np.frombuffer(a, dtype=">u2", count=n)
    y = np.frombuffer(b, dtype=">u2", count=n)
    differ = np.flatnonzero(x != y)
    return int(differ[0]) if len(differ) else n


def index_path(corpus: Corpus) -> Path | None:
    return None if corpus.cache is None else Path(f"{corpus.cache}.train-suffixes.npy")


def _save(path: Path, suffixes: np.ndarray) -> None:
    with contextlib.suppress(OSError):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".suffixes-", suffix=".npy")
        try:
            with os.fdopen(fd, "wb") as out:
                np.save(out, suffixes)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
