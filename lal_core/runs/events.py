"""A run's events, in memory and on disk, and the stop request that comes the other way.

Training and fine-tuning call their `on_event` callback, on the training thread, with one of
these typed events, always built by keyword; the CLI prints them, the dashboard shows them, and
every event is also logged in the run folder as it happens, one JSON line each:

    metrics.jsonl      pre-training: preparing, started, step, eval, checkpoint, early_stop,
                       finished, failed; after an eval its samples: samples_started, then a
                       sample_text for each piece of text as it is drawn, then samples (whole,
                       with their figures)
    sft_metrics.jsonl  fine-tuning: the same, and sft_epoch (its samples: the answers drawn at
                       an epoch's end)

Each line is {"type": ..., "t": wall-clock time, ...the event's fields}. Step and eval lines
keep the keys they had in format 1 (`records.StepRecord`, `records.EvalRecord`: "iter",
"tok_s", "best", "eval_s"), so curves read either layout, and every event's iteration is "iter".
A line is written and flushed as its event happens: a follower (`lal_core.runs.follow`) sees a
step within a poll of its end. `EventLog` is the one writer, `event_from_json` the one reader.

`StopRequest.set()` from any thread, or the run's stop file from any process, makes the run
stop after the step in progress, keeping its checkpoints and metrics.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TextIO

from lal_core.errors import CheckpointError
from lal_core.model.config import ModelConfig
from lal_core.model.recipe import TrainConfig
from lal_core.runs.files import atomic_write
from lal_core.runs.records import (
    METRIC_KEYS,
    CorpusInfo,
    EvalRecord,
    Figures,
    SamplesRecord,
    checked,
    json_kind,
    read_fields,
    type_hints,
    write_fields,
)


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
    line: str  # the write-up's log line (docs/recipe.md, Training), with * on a new best
    mfu: float | None = None  # model-FLOPs utilisation since the previous eval, 0..1
    val_bpb: float | None = None  # val loss in bits per byte
    ema_val_loss: float | None = None  # the weights' moving average's (TrainConfig.ema)

    @classmethod
    def from_record(cls, record: EvalRecord, **more: Any) -> EvalDone:
        """The event of an eval as metrics.jsonl keeps it (the same field names), with the
        rest (best_val, best_iter, line, mfu) given."""
        return cls(**{f.name: getattr(record, f.name) for f in fields(record)}, **more)


@dataclass(frozen=True, kw_only=True)
class SamplesStarted:
    """Samples about to be drawn from the weights at `iteration`, one prompt after another;
    the same prompts, seeds and controls at every eval, so what changes is the model."""

    iteration: int
    prompts: tuple[str, ...]  # sample i continues prompts[i], drawn with seed + i
    tokens: int  # per sample, at most
    seed: int
    controls: str  # the sampling controls, for people (`Controls.describe`)


@dataclass(frozen=True, kw_only=True)
class SampleText:
    """Text sample `index` of the samples at `iteration` has just made visible."""

    iteration: int
    index: int
    text: str


@dataclass(frozen=True, kw_only=True)
class SamplesDone:
    """The samples at `iteration`, whole, with their figures (`records.SamplesRecord`)."""

    iteration: int
    status: str = "done"  # "stopped": a stop request came midway; "failed": see `line`
    prompts: tuple[str, ...] = ()
    texts: tuple[str, ...] = ()
    figures: Figures | None = None
    held_out: Figures | None = None
    seconds: float = 0.0
    line: str = ""

    @classmethod
    def from_record(cls, record: SamplesRecord) -> SamplesDone:
        return cls(**{f.name: getattr(record, f.name) for f in fields(record)})


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
    | SamplesStarted
    | SampleText
    | SamplesDone
    | CheckpointSaved
    | EarlyStopped
    | SFTEpochDone
    | RunFinished
    | RunFailed
)
EventCallback = Callable[[Event], None]  # where a run's events go as they happen


def chain(*callbacks: EventCallback | None) -> EventCallback:
    """One callback that passes each event to every one of `callbacks` given, in order."""
    given = [c for c in callbacks if c is not None]

    def each(event: Event) -> None:
        for callback in given:
            callback(event)

    return each


# -- on disk: one line per event ---------------------------------------------------------------
EVENT_TYPES: dict[str, type] = {
    "preparing": Preparing,
    "started": RunStarted,
    "step": StepDone,
    "eval": EvalDone,
    "samples_started": SamplesStarted,
    "sample_text": SampleText,
    "samples": SamplesDone,
    "checkpoint": CheckpointSaved,
    "early_stop": EarlyStopped,
    "sft_epoch": SFTEpochDone,
    "finished": RunFinished,
    "failed": RunFailed,
}
_TYPE_NAMES = {cls: name for name, cls in EVENT_TYPES.items()}
SAMPLE_EVENTS = ("samples_started", "sample_text", "samples")
# Nested values: how each is written and read back.
_NESTED = {
    ModelConfig: (lambda c: c.to_dict(), ModelConfig.from_dict),
    TrainConfig: (lambda c: c.to_dict(), TrainConfig.from_dict),
    CorpusInfo: (write_fields, lambda d: read_fields(CorpusInfo, d)),
    Figures: (write_fields, Figures.from_json),
}


def event_to_json(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = {"type": _TYPE_NAMES[type(event)]}
    for f in fields(event):
        value = getattr(event, f.name)
        if isinstance(value, Path):
            value = str(value)
        elif type(value) in _NESTED:
            value = _NESTED[type(value)][0](value)
        out[METRIC_KEYS.get(f.name, f.name)] = value
    return out


def event_from_json(data: Any, folder: Path | None = None) -> Event | None:
    """The event of a log line; None for a line this lal does not know or cannot read. Paths
    point into `folder` (where the reader found the run), not where the writer had it."""
    if not isinstance(data, dict) or data.get("type") not in EVENT_TYPES:
        return None
    cls = EVENT_TYPES[data["type"]]
    hints = type_hints(cls)
    given: dict[str, Any] = {}
    try:
        for f in fields(cls):
            kind, value = json_kind(hints[f.name]), data.get(METRIC_KEYS.get(f.name, f.name))
            if kind in _NESTED and isinstance(value, dict):
                given[f.name] = _NESTED[kind][1](value)
            elif kind is Path and isinstance(value, str):
                given[f.name] = Path(value) if folder is None else _into(folder, f.name, value)
            elif kind in _NESTED or kind is Path:
                given[f.name] = None
        return read_fields(cls, data, METRIC_KEYS, **given)
    except (CheckpointError, ValueError, TypeError):
        return None


def _into(folder: Path, name: str, value: str) -> Path:
    """The run folder itself (`run_dir`), or a file in it, wherever the writer kept it."""
    return Path(folder) if name == "run_dir" else Path(folder) / Path(value).name


def event_time(data: dict[str, Any]) -> float | None:
    return checked(data, "t", float) if isinstance(data, dict) else None


class EventLog:
    """The event callback that writes each event to a run's log, then passes it on."""

    def __init__(self, path: Path, then: Callable[[Event], None] | None = None) -> None:
        self.path = Path(path)
        self.then = then
        self._file: TextIO | None = None

    def __call__(self, event: Event) -> None:
        if self._file is None:
            self._file = open(self.path, "a")  # noqa: SIM115 - kept open for the whole run
        data = event_to_json(event)
        line = {"type": data.pop("type"), "t": time.time(), **data}
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()
        if self.then is not None:
            self.then(event)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def cut_log(path: Path, iteration: int, evaluated: bool) -> None:
    """Forget what an event log holds past a resume point (it will happen again), rewriting it
    whole: steps from `iteration` on, the eval and checkpoint at it unless `evaluated`,
    anything later. Lines without an iteration stay."""

    def keep(line: str) -> bool:
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            return False  # cut off by a crash
        it = data.get("iter") if isinstance(data, dict) else None
        if not isinstance(it, int):
            return True
        if data.get("type") == "step":
            return it < iteration
        if data.get("type") in ("eval", "checkpoint", *SAMPLE_EVENTS):
            return it < iteration or (evaluated and it == iteration)
        return it <= iteration

    lines = path.read_text().splitlines() if path.is_file() else []
    text = "".join(line + "\n" for line in lines if keep(line))
    atomic_write(path, lambda tmp: tmp.write_text(text))
