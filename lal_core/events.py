"""Typed progress events from a training run, and the stop request.

`train(..., on_event=callback)` calls the callback, on the training thread, with one of these
events, always built by keyword. The CLI prints them; the dashboard posts them to its UI thread
as messages; SFT and every backend emit the same ones. `StopRequest.set()` from any thread
makes the run stop after the step in progress, keeping its checkpoints and metrics.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lal_core.config import ModelConfig, TrainConfig
from lal_core.records import CorpusInfo, EvalRecord


class StopRequest:
    """A thread-safe flag: set it from anywhere, the training or sampling loop checks it.

    It may also watch a file (`watch`): a run's stop file, which `lal stop` and the dashboard
    write from another process. The file's existence sets the flag."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""
        self._file: Path | None = None

    def set(self, reason: str = "stop requested") -> None:
        self.reason = reason
        self._event.set()

    def watch(self, path: Path | None) -> None:
        self._file = path

    def is_set(self) -> bool:
        if not self._event.is_set() and self._file is not None and self._file.exists():
            self.set(_stop_reason(self._file))
        return self._event.is_set()

    def clear(self) -> None:
        self.reason = ""
        self._event.clear()


def _stop_reason(path: Path) -> str:
    try:
        reason = json.loads(path.read_text()).get("reason")
    except (OSError, ValueError, AttributeError):
        reason = None
    return str(reason or "stop requested")


@dataclass(frozen=True, kw_only=True)
class Preparing:
    """Before RunStarted, when setting up will take a while (compiling the model)."""

    line: str  # what is being done, for people


@dataclass(frozen=True, kw_only=True)
class RunStarted:
    run_id: str
    run_dir: Path
    kind: str  # "train" (pre-training) or "sft" (fine-tuning)
    model_config: ModelConfig
    backend: str
    device: str
    n_params: int
    max_steps: int  # the iteration the run ends at, unless it stops early
    header: str  # a line for people: config, parameters, device, data
    train_config: TrainConfig | None = None  # pre-training's recipe
    corpus: CorpusInfo | None = None  # what pre-training reads


@dataclass(frozen=True, kw_only=True)
class StepDone:
    iteration: int  # the step just taken (0-based)
    loss: float
    lr: float
    tokens_per_sec: float  # of this step
    elapsed: float  # seconds since the run started
    mfu: float | None = None  # model-FLOPs utilisation of this step, 0..1 (None: unknown)


@dataclass(frozen=True, kw_only=True)
class EvalDone:
    iteration: int
    train_loss: float
    val_loss: float
    lr: float
    is_best: bool
    tokens_per_sec: float  # mean over the steps since the previous eval
    elapsed: float
    eval_seconds: float
    best_val: float
    best_iter: int
    line: str  # the SPEC-shaped log line, with * on a new best
    mfu: float | None = None  # model-FLOPs utilisation since the previous eval, 0..1

    @classmethod
    def from_record(cls, record: EvalRecord, **more: Any) -> EvalDone:
        """The event of an eval as metrics.jsonl keeps it (the same field names), with the
        rest (best_val, best_iter, line, mfu) given."""
        return cls(**{f.name: getattr(record, f.name) for f in fields(record)}, **more)


@dataclass(frozen=True, kw_only=True)
class CheckpointSaved:
    iteration: int
    kind: str  # "best", "final" or "sft"
    path: Path


@dataclass(frozen=True, kw_only=True)
class EarlyStopped:
    iteration: int
    best_iter: int
    best_val: float
    patience: int
    line: str


@dataclass(frozen=True, kw_only=True)
class RunFinished:
    status: str  # "completed", "early_stopped" or "stopped"
    iteration: int
    best_val: float | None
    best_iter: int | None
    run_dir: Path
    elapsed: float
    line: str


@dataclass(frozen=True, kw_only=True)
class SFTEpochDone:
    epoch: int  # 1-based
    epochs: int
    masked_loss: float  # mean loss over the counted (answer) tokens of this epoch
    skipped_batches: int  # batches whose targets were all ignored
    elapsed: float
    line: str


@dataclass(frozen=True, kw_only=True)
class RunFailed:
    message: str
    run_dir: Path | None = None
    iteration: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Event = (
    Preparing
    | RunStarted
    | StepDone
    | EvalDone
    | CheckpointSaved
    | EarlyStopped
    | SFTEpochDone
    | RunFinished
    | RunFailed
)
