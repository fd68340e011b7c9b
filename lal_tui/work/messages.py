"""Messages the engine jobs post to the pane that asked for the work.

Jobs run on worker threads (`lal_tui.work.jobs`) and only ever post these (`post_message` is
thread-safe and never blocks); every change to the screen happens in handlers. A job posts to
the widget it was started for (`JobRunner.start(group, job, to=pane)`): that pane handles what
it shows, and the message bubbles on up to the app, which keeps what reaches past one pane
(notifications, the lists of runs, the keys on offer). What comes by the thousand, a token
drawn, a training step and a piece of a run's samples, stays in its pane.

The panes' own requests (fine-tune this run, generate, resume...) are nested in the pane that
posts them, e.g. `SFTPane.FineTuneRequested`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual.message import Message

from lal_core.runs.events import Event, SampleText, StepDone
from lal_core.runs.records import CorpusInfo


@dataclass
class EngineEvent(Message):
    """One engine event from a job: RunStarted, StepDone, EvalDone, RunFailed..."""

    event: Event

    def __post_init__(self) -> None:
        super().__post_init__()
        # A step or a piece of a sample is news to the pane that draws it alone, and a followed
        # run's whole log comes at once: each hop up to the app would cost a frame's worth.
        self.stop(isinstance(self.event, StepDone | SampleText))


class TrainEvent(EngineEvent):
    """An event of the training run."""


class SFTEvent(EngineEvent):
    """An event of the fine-tuning run (StepDone, SFTEpochDone, CheckpointSaved...)."""


class Ticket:
    """A job's standing as its group's latest: `JobRunner.start` hands one to each job and
    marks it `superseded` when the group's next job starts."""

    def __init__(self) -> None:
        self.superseded = False


@dataclass
class JobNews(Message):
    """What a job says about itself (it failed, it ended): dropped once `stale`."""

    ticket: Ticket | None = field(default=None, kw_only=True)

    @property
    def stale(self) -> bool:
        """A newer job of the group has started since: it speaks for the group now."""
        return self.ticket is not None and self.ticket.superseded


@dataclass
class EngineError(JobNews):
    """A job failed: one line for its pane and a notification; the app keeps running."""

    source: str  # the job's group: "train", "sft", "ask", "sample", "corpus", "report"...
    message: str


@dataclass
class JobEnded(JobNews):
    """A job has returned: `result` is what it returned, None when it failed."""

    group: str
    result: Any


@dataclass
class CorpusCounted(Message):
    """The corpus the Setup pane points at (`request`: the path as typed, None: the default),
    counted."""

    request: str | None
    info: CorpusInfo


@dataclass
class PictureSaved(Message):
    """A loss-curve picture was written (the Runs pane's `s`)."""

    path: Path


@dataclass
class SampleStarted(Message):
    checkpoint: Path
    prompt: str
    samples: int = 1


@dataclass
class SampleToken(Message, bubble=False):
    """One token drawn by the sampler: its text and probability (for the Sample pane alone:
    they come as fast as they are drawn)."""

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
