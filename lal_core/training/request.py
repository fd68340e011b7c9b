"""What a training run is asked to be (`RunRequest`), what it became (`RunResult`), and where
it stands: between sessions (`LoopState`, saved with the weights) and in time (`Clock`). What
`lal_core.training.train` starts from and hands back, and what a resume reads and checks first.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lal_core.backends.base import Backend
from lal_core.data.corpus import Corpus, check_corpus_fits, load_corpus, val_windows
from lal_core.errors import LalError
from lal_core.model.config import ModelConfig
from lal_core.model.recipe import TrainConfig
from lal_core.runs.checkpoints import STATE_FILE, load_state
from lal_core.runs.folder import RunDir, process_info, stopped_run
from lal_core.runs.records import CorpusInfo, EvalRecord, RunRecord


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

    def corpus(self) -> tuple[Corpus, CorpusInfo]:
        """The corpus it names (loaded, or given as one), checked to fit the model's context,
        and as run.json records it: with the val tokens an eval scores."""
        corpus, block = self.data, self.model_config.block_size
        if not isinstance(corpus, Corpus):
            corpus = load_corpus(corpus, block_size=block)
        check_corpus_fits(corpus, block)
        windows = val_windows(corpus.val, block, self.train_config.eval_tokens)
        return corpus, CorpusInfo(**corpus.describe(), eval_tokens=len(windows) * block)

    def new_record(
        self, run_id: str, backend: Backend, corpus: CorpusInfo, fields: dict[str, Any]
    ) -> RunRecord:
        """run.json of a new run of this request on `backend` (with `fields`: its recipe and
        ranks), running now, in this process. Its backend options are kept, so a resumed run
        computes the same way (dtype, compile)."""
        return RunRecord(
            run_id=run_id,
            model_config=backend.cfg,
            created=time.time(),
            backend=backend.name,
            device=backend.device,
            backend_options={k: v for k, v in self.backend_options.items() if v is not None},
            **fields,
            n_params=backend.num_parameters(),
            data=corpus,
            status="running",
            process=process_info(),
        )


@dataclass
class RunResult:
    run_dir: Path
    status: str  # "completed", "early_stopped", "stopped" or "failed"
    iteration: int
    best_val: float | None
    best_iter: int | None
    message: str = ""  # why it failed

    @classmethod
    def of(cls, run_dir: Path, status: str, state: LoopState, message: str = "") -> RunResult:
        """How a run ended, with where its loop `state` stood."""
        best = state.best_val if state.best_iter is not None else None
        return cls(run_dir, status, state.iteration, best, state.best_iter, message)


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

    def new_best(self, val_loss: float) -> bool:
        """Fold in an eval's val loss: True for a new best; else one more eval without one (the
        early-stopping count)."""
        if val_loss < self.best_val:
            self.best_val, self.best_iter, self.bad_evals = val_loss, self.iteration, 0
            return True
        self.bad_evals += 1
        return False

    def to_dict(self) -> dict:
        best = self.best_val if math.isfinite(self.best_val) else None
        return {**self.__dict__, "best_val": best}

    @classmethod
    def from_dict(cls, data: dict) -> LoopState:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        state = cls(**known)
        state.best_val = math.inf if state.best_val is None else float(state.best_val)
        return state


@dataclass(frozen=True)
class SavedRun:
    """A stopped run to go on with: its folder and what it had learned when it stopped."""

    run: RunDir
    weights: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]  # AdamW's moments and step, the random generators
    state: LoopState


class Clock:
    """Seconds since a run started, earlier sessions of a resumed run included."""

    def __init__(self, before: float = 0.0) -> None:
        self._start = time.perf_counter() - before

    def __call__(self) -> float:
        return time.perf_counter() - self._start


def format_elapsed(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def resume_request(
    ref: str | Path, runs_dir: Path | None = None, check_writer: bool = True, **changes: Any
) -> tuple[RunRequest, SavedRun]:
    """The request that continues the run `ref` names, and its saved state, once it is clear
    it can (`runs.folder.stopped_run`; it has steps left; its corpus is the same text).
    `changes` (max_iters, micro_batch, device), where given, replace the run's: they change
    how it runs, not what it learns. Else a one-line LalError."""
    run, record, saved = stopped_run(ref, runs_dir, check_writer)
    state = LoopState.from_dict(saved)
    device = changes.pop("device", None)
    given = {k: v for k, v in changes.items() if v is not None}
    train_cfg = replace(record.train_config, **given).validate()
    done = record.status in ("completed", "early_stopped")
    if done and state.iteration >= train_cfg.max_iters:
        raise LalError(
            f"run {run.run_id} already {record.status.replace('_', ' ')} at iter "
            f"{state.iteration}; pass --max-iters above it to train further"
        )
    request = RunRequest(
        record.model_config,
        train_cfg,
        backend=record.backend,
        device=device or record.device,
        data=record_corpus(record, then="resuming on other text would not continue the run"),
        runs_dir=runs_dir,
        backend_options=record.backend_options,
    )
    weights, optimizer, _ = load_state(run.path / STATE_FILE, record.model_config)
    return request, SavedRun(run, weights, optimizer, state)


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


def eval_line(record: EvalRecord, mfu: float | None = None) -> str:
    """The original write-up's log line, plus throughput:
    `iter 250  | train 4.5904  | val 5.1055  | lr 2.99e-04 | 5,210 tok/s (31% MFU) | 2.1 min *`,
    with the val loss in bits per byte after it where known (`val 5.1055 (2.161 bpb)`) and the
    weights' average's val loss after that where one is kept (`ema 5.0712`)."""
    r = record
    val = f"{r.val_loss:.4f}" + (f" ({r.val_bpb:.3f} bpb)" if r.val_bpb else "")
    width = 19 if r.val_bpb else 7  # the columns after it line up from eval to eval
    util = f" ({mfu:.0%} MFU)" if mfu is not None and r.tokens_per_sec else ""
    ema = f"ema {r.ema_val_loss:.4f} | " if r.ema_val_loss is not None else ""
    return (
        f"iter {r.iteration:<4} | train {r.train_loss:<7.4f} | val {val:<{width}} | {ema}"
        f"lr {r.lr:.2e} | {r.tokens_per_sec:,.0f} tok/s{util} | {format_elapsed(r.elapsed)}"
        f"{' *' if r.is_best else ''}"
    )
