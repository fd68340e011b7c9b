"""`lal eval`: a checkpoint's loss, bits per byte and perplexity on its run's val split or on any
text.

The loss is the one training's evals report (`lal_core.training.evals.window_loss`): the mean
cross-entropy over fixed, non-overlapping windows of block_size + 1 tokens that tile the text,
every position of a window predicted. So a run's best checkpoint scores its recorded best val
loss, on the same backend and dtype. Perplexity is exp(loss): the number of equally likely next
tokens the model is, on average, as unsure as.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lal_core.backends import Backend
from lal_core.data import corpus as data_mod
from lal_core.errors import DataError, LalError
from lal_core.generation.sampling import load_for_sampling
from lal_core.model.recipe import eval_batch_size
from lal_core.runs.folder import RunDir
from lal_core.runs.records import RunRecord
from lal_core.training.evals import bits_per_byte, window_loss
from lal_core.training.request import record_corpus


@dataclass(frozen=True)
class Score:
    checkpoint: Path
    text: str  # what was scored, for people: "the val split of input.txt", "notes.txt"
    loss: float
    windows: int
    block: int  # the model's context: tokens predicted per window
    bpb: float  # the loss in bits per byte of the text scored

    @property
    def tokens(self) -> int:
        return self.windows * self.block

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    def line(self) -> str:
        return (
            f"{self.checkpoint.parent.name}/{self.checkpoint.name} on {self.text}: "
            f"loss {self.loss:.4f} ({self.bpb:.4f} bits per byte), perplexity "
            f"{self.perplexity:.2f} over {self.tokens:,} tokens "
            f"({self.windows:,} windows of {self.block})"
        )


def score(
    checkpoint: Path,
    data: str | None = None,
    backend: str | None = None,
    device: str | None = None,
    batch_size: int | None = None,
) -> Score:
    """Score a checkpoint file: on `data` (the whole text) if given, else on the val split of
    the corpus its run trained on (checked to be the same text). A run's checkpoint is loaded
    with the run's backend options (its dtype), so the figure matches the run's evals."""
    checkpoint = Path(checkpoint)
    if data is None and not RunDir(checkpoint.parent).run_json.is_file():
        raise LalError(
            f"{checkpoint} is not in a run folder, so it has no val split; "
            "give the text to score with --data PATH"
        )
    model, record = load_scored(checkpoint, backend, device)
    batch_size = batch_size or run_eval_batch(model, record)
    block = model.cfg.block_size
    if data is not None:
        tokens, text = _text(data, block)
        starts = data_mod.eval_windows(tokens, block)
    else:
        tokens, text = _val_split(record)
        starts = run_val_windows(tokens, block, record)
    loss = window_loss(model, tokens, starts, batch_size)
    bpb = loss * bits_per_byte(tokens, starts, block)
    return Score(checkpoint, text, loss, len(starts), block, bpb)


def run_eval_batch(model: Backend, record: RunRecord | None) -> int:
    """Windows per forward pass for scoring a run's checkpoint: its evals' batch."""
    train_cfg = record.train_config if record is not None else None
    return eval_batch_size(model.cfg, train_cfg.micro if train_cfg else 1)


def run_val_windows(val: np.ndarray, block: int, record: RunRecord | None) -> np.ndarray:
    """The windows of a run's val split that its evals score (all, or its eval_tokens' worth)."""
    train_cfg = record.train_config if record is not None else None
    return data_mod.val_windows(val, block, train_cfg.eval_tokens if train_cfg else 0)


def record_of(checkpoint: Path) -> RunRecord | None:
    """The record of the run a checkpoint file is in (None: it is in no run folder)."""
    run = RunDir(Path(checkpoint).parent)
    return run.read() if run.run_json.is_file() else None


def load_scored(
    checkpoint: Path, backend: str | None = None, device: str | None = None
) -> tuple[Backend, RunRecord | None]:
    """A checkpoint loaded to be scored, and its run's record (None outside a run folder): on
    the run's backend unless `backend` is given, with the run's dtype, so a run's best
    checkpoint scores its recorded best val."""
    record = record_of(checkpoint)
    name = backend or (record.backend if record is not None else "torch")
    options = _eval_options(name, record.backend_options) if record is not None else {}
    return load_for_sampling(checkpoint, name, device, **options), record


def _text(data: str, block: int) -> tuple[np.ndarray, str]:
    """All the tokens of a text file, which must hold at least one window."""
    corpus = data_mod.load_corpus(data)
    if len(corpus.tokens) < block + 1:
        raise DataError(
            f"{corpus.path} has {len(corpus.tokens)} tokens, fewer than one window of this "
            f"model's context ({block + 1} tokens); give a longer text"
        )
    return corpus.tokens, corpus.path.name


def _val_split(record: RunRecord) -> tuple[np.ndarray, str]:
    corpus = record_corpus(record)
    return corpus.val, f"the val split of {corpus.path.name}"


def _eval_options(backend: str, options: dict) -> dict:
    """The run's training options that also shape an eval (the dtype), for `load_for_sampling`."""
    keep = {"dtype", "chunked_loss"} if backend == "torch" else set()
    return {k: v for k, v in options.items() if k in keep}
