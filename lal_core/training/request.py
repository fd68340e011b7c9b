"""What a training run is asked to be (`RunRequest`), what it became (`RunResult`), and where
it stands between sessions (`LoopState`, saved with the weights): what `lal_core.training.train`
starts from and hands back, and what a resume reads and checks first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lal_core.backends.base import Backend
from lal_core.data.corpus import Corpus, load_corpus
from lal_core.errors import LalError
from lal_core.model.config import ModelConfig
from lal_core.model.recipe import TrainConfig
from lal_core.runs.checkpoints import STATE_FILE, load_state, read_state_header
from lal_core.runs.folder import RunDir
from lal_core.runs.lock import RunBusy
from lal_core.runs.records import RunRecord


@dataclass(frozen=True)
class RunRequest:
    """A training run as it is asked for: what to train, on what, and where."""

    model_config: ModelConfig
    train_config: TrainConfig = field(default_factory=TrainConfig)
    backend: str | Backend = "torch"  # a backend's name (or one built already: tests)
    device: str | None = None  # None: the best the backend has
    data: str | Path | Corpus | None = None  # a text file or a dataset (None: the default)
    runs_dir: Path | None = None  # where run folders go (None: checkpoints/)
    backend_options: dict[str, Any] = field(default_factory=dict)  # dtype, compile, ...
    peak_tflops: float | None = None  # MFU's peak (None: the backend's for its device)


@dataclass
class RunResult:
    run_dir: Path
    status: str  # "completed", "early_stopped", "stopped" or "failed"
    iteration: int
    best_val: float | None
    best_iter: int | None
    message: str = ""  # why it failed


@dataclass
class LoopState:
    """Where pre-training is: enough, with the weights and optimizer, to resume exactly."""

    iteration: int = 0  # the next step to take
    evaluated: bool = False  # whether the eval at `iteration` has already run
    best_val: float = math.inf
    best_iter: int | None = None
    bad_evals: int = 0  # evals since the last new best (early-stopping counter)
    elapsed: float = 0.0  # seconds of earlier sessions of this run
    batch_rng: dict | None = None  # numpy's bit-generator state for the batch sampler

    def to_dict(self) -> dict:
        best = self.best_val if math.isfinite(self.best_val) else None
        return {**self.__dict__, "best_val": best}

    @classmethod
    def from_dict(cls, data: dict) -> LoopState:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        state = cls(**known)
        state.best_val = math.inf if state.best_val is None else float(state.best_val)
        return state


def resume_request(
    run: RunDir, runs_dir: Path | None = None, check_writer: bool = True, **changes: Any
) -> RunRequest:
    """The request that continues `run` from its saved state, once it is clear it can: nothing
    writes it now (`check_writer`: rank 0 may already hold it), it has its recipe, its corpus
    (the same text) and a saved state, and it has steps left. `changes` (max_iters,
    micro_batch, device), where given, replace the run's: they change how it runs, not what it
    learns. Else a one-line LalError."""
    record = run.read()
    writer = run.writer(record) if check_writer else None
    if writer is not None:  # the early word; the lock taken in run_training is the guard
        raise RunBusy(f"run {run.run_id} is being written by {writer.describe()}")
    if record.train_config is None or record.data is None:
        missing = "train_config" if record.train_config is None else "data"
        raise LalError(f"{run.run_json} is missing {missing!r}; this run cannot be resumed")
    if not (run.path / STATE_FILE).is_file():
        raise LalError(f"run {run.run_id} has no saved training state ({STATE_FILE}) to resume")
    state = LoopState.from_dict(read_state_header(run.path / STATE_FILE))
    device = changes.pop("device", None)
    given = {k: v for k, v in changes.items() if v is not None}
    train_cfg = replace(record.train_config, **given).validate()
    done = record.status in ("completed", "early_stopped")
    if done and state.iteration >= train_cfg.max_iters:
        raise LalError(
            f"run {run.run_id} already {record.status.replace('_', ' ')} at iter "
            f"{state.iteration}; pass --max-iters above it to train further"
        )
    return RunRequest(
        record.model_config,
        train_cfg,
        backend=record.backend,
        device=device or record.device,
        data=record_corpus(record, then="resuming on other text would not continue the run"),
        runs_dir=runs_dir,
        backend_options=record.backend_options,
    )


def record_corpus(record: RunRecord, then: str = "give the text with --data PATH") -> Corpus:
    """The corpus a run trained on, checked to be the same text: a one-line LalError, ending
    with what to do `then`, if it has changed since or the run records none."""
    if record.data is None:  # a hand-made run folder
        raise LalError(f"run {record.run_id} records no corpus; {then}")
    corpus = load_corpus(record.data.path, block_size=record.model_config.block_size)
    if record.data.sha256 and corpus.sha256 != record.data.sha256:
        raise LalError(
            f"the corpus {corpus.path} changed since run {record.run_id} trained on it "
            f"(sha256 differs); {then}"
        )
    return corpus


def saved_state(run: RunDir, cfg: ModelConfig) -> tuple[dict, dict, LoopState]:
    """A resumed run's saved weights, optimizer state and loop state."""
    weights, optimizer, loop = load_state(run.path / STATE_FILE, cfg)
    return weights, optimizer, LoopState.from_dict(loop)
