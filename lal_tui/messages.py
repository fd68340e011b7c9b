"""Messages the engine workers post to the app.

Workers run on their own threads and only ever call `App.post_message` (thread-safe, never
blocks); every change to the screen happens in the app's handlers for these messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.message import Message

from lal_core.events import Event


class TrainEvent(Message):
    """One engine event from a training run (RunStarted, StepDone, EvalDone, ...)."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


class TrainEnded(Message):
    """The training worker has returned (finished, stopped or failed)."""

    def __init__(self, status: str | None, run_dir: Path | None) -> None:
        super().__init__()
        self.status = status
        self.run_dir = run_dir


class EngineError(Message):
    """A worker hit an error: shown as a notification, the app keeps running."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__()
        self.source = source  # "train", "sample", "sft", "corpus", "runs"
        self.message = message


@dataclass(frozen=True)
class CorpusStats:
    path: Path
    tokens: int
    train_tokens: int
    val_tokens: int


class CorpusInfo(Message):
    """The corpus the Setup pane points at, counted (or why it could not be)."""

    def __init__(self, request: str, stats: CorpusStats | None, error: str | None) -> None:
        super().__init__()
        self.request = request
        self.stats = stats
        self.error = error


class SampleStarted(Message):
    def __init__(self, checkpoint: Path, prompt: str) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self.prompt = prompt


class SampleToken(Message):
    """One token drawn by the sampler: its text and probability."""

    def __init__(self, text: str, prob: float) -> None:
        super().__init__()
        self.text = text
        self.prob = prob


class SampleFinished(Message):
    def __init__(self, tokens: int, seconds: float, stopped: bool) -> None:
        super().__init__()
        self.tokens = tokens
        self.seconds = seconds
        self.stopped = stopped


class SFTEvent(Message):
    """One engine event from a fine-tuning run (StepDone, SFTEpochDone, CheckpointSaved...)."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


class SFTAnswer(Message):
    """An answer to a chat question from the base ("before") or fine-tuned ("after") model."""

    def __init__(self, which: str, question: str, answer: str) -> None:
        super().__init__()
        self.which = which
        self.question = question
        self.answer = answer


class SFTEnded(Message):
    def __init__(self, status: str | None, checkpoint: Path | None) -> None:
        super().__init__()
        self.status = status
        self.checkpoint = checkpoint
