"""The figures of a set of samples, each a mean over them (`runs.records.Figures`): the one
implementation behind an eval's writing figures, `lal report`'s columns and the Sample pane."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lal_core.runs.records import Figures
from lal_core.writing.repetition import distinct, find_loop, repeated_share
from lal_core.writing.verbatim import VerbatimIndex


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def standard_error(values: Sequence[float | None]) -> float | None:
    """The standard error of the mean of the known values: their standard deviation (n - 1)
    over sqrt(n); None under two values. Samples of one prompt are alike, so this is a lower
    bound on the spread a redraw with other prompts would show (README.md, Is what it writes any
    good?, checks it with two seeds)."""
    known = [v for v in values if v is not None]
    if len(known) < 2:
        return None
    return float(np.std(known, ddof=1) / np.sqrt(len(known)))


def figures_of(
    samples: Sequence[Sequence[int]],
    index: VerbatimIndex | None,
    closed: float | None = None,
    val_loss: float | None = None,
) -> Figures:
    """The figures of samples given as BPE tokens (without an index, no memorisation)."""
    found = [index.verbatim(s) for s in samples] if index is not None else []
    longest = max(found, key=lambda v: v.longest, default=None)
    per_sample = {
        "distinct_1": [distinct(s, 1) for s in samples],
        "distinct_2": [distinct(s, 2) for s in samples],
        "repeated_4": [repeated_share(s, 4) for s in samples],
        "memorised_8": [v.memorised for v in found],
        "invented_words": [v.invented for v in found],
    }
    means = {name: _mean(values) for name, values in per_sample.items()}
    errors = {f"{name}_se": standard_error(values) for name, values in per_sample.items()}
    return Figures(
        samples=len(samples),
        looping=sum(find_loop(s) is not None for s in samples),
        longest=longest.longest if longest else 0,
        longest_text=longest.longest_text if longest else "",
        closed=closed,
        val_loss=val_loss,
        **means,
        **errors,
    )
