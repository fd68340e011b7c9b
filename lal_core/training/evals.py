"""Evals: a model's mean loss over fixed windows of a split, as training's evals, `lal eval`
and the report's val loss all compute it.

Bits per byte (`bits_per_byte`) says the same loss per byte of text instead of per token: the
nats over the windows' predicted tokens, over the UTF-8 bytes those tokens stand for, / ln 2.
It does not depend on the tokenizer, so a BPE model compares with a character model by it.

A window is block_size + 1 tokens: every one of its block_size positions is predicted, and the
windows tile the split without overlapping (or are spread evenly over it, the same ones every
time, where an eval scores only part of it). On several ranks each round of windows is split
across them and their losses summed: the same mean as one process.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from lal_core.backends.base import Backend
from lal_core.data.corpus import Corpus, eval_windows, val_windows, window_batches
from lal_core.data.tokenizer import token_byte_lengths
from lal_core.model.recipe import TrainConfig, eval_batch_size


def evaluate(
    backend: Backend,
    corpus: Corpus,
    cfg: TrainConfig,
    stop: Callable[[], bool] | None = None,
) -> tuple[float, float] | None:
    """(train loss, val loss): val over the val split's eval windows (all of it, or at most
    cfg.eval_tokens spread evenly over it), train over as many windows spread evenly over the
    train split. Deterministic. None when `stop()` turned true on the way: the eval was
    abandoned."""
    block = backend.cfg.block_size
    val_starts = val_windows(corpus.val, block, cfg.eval_tokens)
    train_starts = eval_windows(corpus.train, block, count=len(val_starts))
    batch = eval_batch_size(backend.cfg, cfg.micro_per_rank(backend.ranks.world))
    train = window_loss(backend, corpus.train, train_starts, batch, stop)
    if train is None:
        return None
    val = window_loss(backend, corpus.val, val_starts, batch, stop)
    return None if val is None else (train, val)


def average_val_loss(
    backend: Backend,
    corpus: Corpus,
    cfg: TrainConfig,
    stop: Callable[[], bool] | None = None,
) -> float | None:
    """The val loss of the weights' moving average (TrainConfig.ema), over `evaluate`'s val
    windows; the weights are back as they were after it. None: abandoned for `stop()`."""
    block = backend.cfg.block_size
    starts = val_windows(corpus.val, block, cfg.eval_tokens)
    batch = eval_batch_size(backend.cfg, cfg.micro_per_rank(backend.ranks.world))
    with backend.averaged_weights():
        return window_loss(backend, corpus.val, starts, batch, stop)


def window_loss(
    backend: Backend,
    split: np.ndarray,
    starts: np.ndarray,
    batch_size: int,
    stop: Callable[[], bool] | None = None,
) -> float | None:
    """The mean loss over the windows of `split` that start at `starts` (each counts the same);
    None if `stop()` turns true between two rounds of batches."""
    ranks, block_size = backend.ranks, backend.cfg.block_size
    total, per_round = 0.0, batch_size * ranks.world
    for i in range(0, len(starts), per_round):
        if stop is not None and stop():
            return None
        chunk = starts[i : i + per_round]
        share = -(-len(chunk) // ranks.world)  # rows per rank, the last rank's fewer or none
        mine = chunk[ranks.rank * share : (ranks.rank + 1) * share]
        for x, y in window_batches(split, mine, block_size, batch_size):
            total += backend.eval_loss(x, y) * len(x)
    return ranks.sum([total])[0] / len(starts)


def bits_per_byte(split: np.ndarray, starts: np.ndarray, block_size: int) -> float:
    """Bits per byte for each nat per token of the windows at `starts`: their loss (the mean
    over their predicted tokens, in nats) times this is the loss in bits per byte of the text
    those tokens stand for. 0 for windows with no byte."""
    lengths, tokens, utf8 = token_byte_lengths(), 0, 0
    offsets = np.arange(1, block_size + 1)
    for i in range(0, len(starts), 1024):  # 1,024 windows at a time: a val split of gigabytes
        targets = np.asarray(split)[starts[i : i + 1024, None] + offsets]  # (n, block_size)
        tokens += targets.size
        utf8 += int(lengths[targets].sum())
    return tokens / (utf8 * math.log(2)) if utf8 else 0.0


def val_bits_per_byte(corpus: Corpus, block_size: int, cfg: TrainConfig) -> float:
    """`bits_per_byte` of the val windows `evaluate` scores."""
    starts = val_windows(corpus.val, block_size, cfg.eval_tokens)
    return bits_per_byte(corpus.val, starts, block_size)
