"""A run's events on disk: every event the engine emits, one JSON line, written as it happens.

    metrics.jsonl      pre-training: preparing, started, step, eval, checkpoint, early_stop,
                       finished, failed
    sft_metrics.jsonl  fine-tuning: the same, and sft_epoch

Each line is {"type": ..., "t": wall-clock time, ...the event's fields}. Step and eval lines
keep the keys they had in format 1 (`records.StepRecord`, `records.EvalRecord`: "iter",
"tok_s", "best", "eval_s"), so curves read either layout, and every event's iteration is "iter".
A line is written and flushed as its event happens: a follower (`lal_core.follow`) sees a step
within a poll of its end. `event_from_json` is the one reader.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any, TextIO

from lal_core import events as ev
from lal_core.config import ModelConfig, TrainConfig
from lal_core.errors import CheckpointError
from lal_core.records import (
    METRIC_KEYS,
    CorpusInfo,
    checked,
    json_kind,
    read_fields,
    type_hints,
    write_fields,
)

EVENT_TYPES: dict[str, type] = {
    "preparing": ev.Preparing,
    "started": ev.RunStarted,
    "step": ev.StepDone,
    "eval": ev.EvalDone,
    "checkpoint": ev.CheckpointSaved,
    "early_stop": ev.EarlyStopped,
    "sft_epoch": ev.SFTEpochDone,
    "finished": ev.RunFinished,
    "failed": ev.RunFailed,
}
_TYPE_NAMES = {cls: name for name, cls in EVENT_TYPES.items()}
# Nested values: how each is written and read back.
_NESTED = {
    ModelConfig: (lambda c: c.to_dict(), ModelConfig.from_dict),
    TrainConfig: (lambda c: c.to_dict(), TrainConfig.from_dict),
    CorpusInfo: (write_fields, lambda d: read_fields(CorpusInfo, d)),
}


def event_to_json(event: ev.Event) -> dict[str, Any]:
    out: dict[str, Any] = {"type": _TYPE_NAMES[type(event)]}
    for f in fields(event):
        value = getattr(event, f.name)
        if isinstance(value, Path):
            value = str(value)
        elif type(value) in _NESTED:
            value = _NESTED[type(value)][0](value)
        out[METRIC_KEYS.get(f.name, f.name)] = value
    return out


def event_from_json(data: Any, folder: Path | None = None) -> ev.Event | None:
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

    def __init__(self, path: Path, then: Callable[[ev.Event], None] | None = None) -> None:
        self.path = Path(path)
        self.then = then
        self._file: TextIO | None = None

    def __call__(self, event: ev.Event) -> None:
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
