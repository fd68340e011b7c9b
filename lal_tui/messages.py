"""Messages the engine jobs post to the app.

Jobs run on worker threads (see `lal_tui.jobs`) and only ever post these (`App.post_message`
is thread-safe and never blocks); every change to the screen happens in the app's handlers.
The panes' own requests (fine-tune this run, generate, resume...) are nested in the pane that
posts them, e.g. `SFTPane.FineTuneRequested`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.message import Message
from textual.worker import Worker

from lal_core.runs.events import Event


@dataclass
class EngineEvent(Message):
    """One engine event from a job: RunStarted, StepDone, EvalDone, RunFailed..."""

    event: Event


class TrainEvent(EngineEvent):
    """An event of the training run."""


class SFTEvent(EngineEvent):
    """An event of the fine-tuning run (StepDone, SFTEpochDone, CheckpointSaved...)."""


@dataclass
class EngineError(Message):
    """A job failed: one line for a notification; the app keeps running."""

    source: str  # the job's group: "train", "sft", "ask", "sample", "corpus", "picture"
    message: str
    worker: Worker | None = None  # the job's worker, so a superseded job's error can be dropped


@dataclass
class JobEnded(Message):
    """A job has returned: `result` is what it returned, None when it failed."""

    group: str
    result: Any
    worker: Worker | None = None


@dataclass(frozen=True)
class CorpusStats:
    path: Path
    tokens: int
    train_tokens: int
    val_tokens: int


@dataclass
class PictureSaved(Message):
    """A loss-curve picture was written (the Runs pane's `s`)."""

    path: Path


@dataclass
class CorpusInfo(Message):
    """The corpus the Setup pane points at (`request`: the path as typed, None: the default),
    counted."""

    request: str | None
    stats: CorpusStats


@dataclass
class SampleStarted(Message):
    checkpoint: Path
    prompt: str
    samples: int = 1


@dataclass
class SampleToken(Message):
    """One token drawn by the sampler: its text and probability."""

    text: str
    prob: float


@dataclass
class SampleEnded(Message):
    """One of several samples drawn together has ended: its whole text (without the prompt)."""

    row: int
    seed: int
    text: str


@dataclass
class SampleFigures(Message):
    """The quality figures of the samples just drawn, in one line."""

    line: str


@dataclass
class SampleFinished(Message):
    tokens: int
    seconds: float
    stopped: bool


@dataclass
class ReportProgress(Message):
    """A report on a run is drawing: `done` of `total` prompts, and what it is doing."""

    path: Path
    done: int
    total: int
    what: str


@dataclass
class ReportDone(Message):
    """A report on a run is written (its report.json)."""

    path: Path


@dataclass
class SFTAnswer(Message):
    """An answer to a chat question from the base ("before") or fine-tuned ("after") model."""

    which: str
    question: str
    answer: str
