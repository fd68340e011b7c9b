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


def figures_of(
    samples: Sequence[Sequence[int]],
    index: VerbatimIndex | None,
    closed: float | None = None,
    val_loss: float | None = None,
) -> Figures:
    """The figures of samples given as BPE tokens (without an index, no memorisation)."""
    found = [index.verbatim(s) for s in samples] if index is not None else []
    longest = max(found, key=lambda v: v.longest, default=None)
    return Figures(
        samples=len(samples),
        distinct_1=_mean([distinct(s, 1) for s in samples]),
        distinct_2=_mean([distinct(s, 2) for s in samples]),
        repeated_4=_mean([repeated_share(s, 4) for s in samples]),
        looping=sum(find_loop(s) is not None for s in samples),
        memorised_8=_mean([v.memorised for v in found]),
        longest=longest.longest if longest else 0,
        longest_text=longest.longest_text if longest else "",
        closed=closed,
        val_loss=val_loss,
    )
