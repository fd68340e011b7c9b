"""A run's quality report as it is saved (`report.json`), typed: what `lal report` writes and
the dashboard reads. Kept apart from `report.py` so that reading one imports no framework.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lal_core.errors import CheckpointError
from lal_core.runs.files import atomic_write, read_json, write_json
from lal_core.runs.folder import RunDir
from lal_core.runs.records import read_fields, write_fields

REPORT_FILE = "report.json"
FORMAT = 1


@dataclass(frozen=True)
class Figures:
    """A column's figures (or the held-out text's), each a mean over its samples."""

    samples: int
    distinct_1: float | None
    distinct_2: float | None
    repeated_4: float | None  # share of 4-grams repeating an earlier one of the same sample
    looping: int  # samples caught in a loop
    memorised_8: float | None  # share of 8-grams found verbatim in the training split
    longest: int  # tokens in the longest verbatim stretch of any sample
    longest_text: str
    closed: float | None = None  # chat mode: share of answers the model closed
    val_loss: float | None = None

    def to_json(self) -> dict[str, Any]:
        return write_fields(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Figures:
        return read_fields(cls, data)


@dataclass(frozen=True)
class ColumnResult:
    label: str
    checkpoint: str
    backend: str
    settings: str  # the controls, for people (`Controls.describe`)
    figures: Figures
    texts: tuple[tuple[str, ...], ...]  # per prompt, its samples' text (without the prompt)

    def to_json(self) -> dict[str, Any]:
        return {**write_fields(self), "figures": self.figures.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ColumnResult:
        texts = tuple(tuple(str(t) for t in row) for row in data.get("texts") or ())
        figures = Figures.from_json(_object(data, "figures"))
        return read_fields(cls, data, figures=figures, texts=texts)


@dataclass(frozen=True)
class QualityReport:
    mode: str  # "text" or "chat"
    corpus: str  # the text the baseline, the val loss and the verbatim search come from
    prompts: tuple[str, ...]
    trained: tuple[bool, ...]  # chat mode: whether each question is one of the training pairs
    samples: int  # per prompt
    tokens: int  # per sample, at most
    seed: int
    columns: tuple[ColumnResult, ...]
    baseline: Figures | None  # None: no corpus to take held-out text from
    baseline_texts: tuple[str, ...]
    created: float = field(default_factory=time.time)
    format: int = FORMAT

    def to_json(self) -> dict[str, Any]:
        return {
            **write_fields(self),
            "columns": [c.to_json() for c in self.columns],
            "baseline": self.baseline.to_json() if self.baseline else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QualityReport:
        if not isinstance(data.get("format"), int) or data["format"] > FORMAT:
            raise CheckpointError("the report was written by a newer lal; update lal to read it")
        columns = data.get("columns")
        if not isinstance(columns, list):
            raise CheckpointError("columns is missing")
        return read_fields(
            cls,
            data,
            columns=tuple(ColumnResult.from_json(c) for c in columns),
            baseline=Figures.from_json(data["baseline"]) if data.get("baseline") else None,
            prompts=tuple(str(p) for p in data.get("prompts") or ()),
            trained=tuple(bool(t) for t in data.get("trained") or ()),
            baseline_texts=tuple(str(t) for t in data.get("baseline_texts") or ()),
        )


def _object(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise CheckpointError(f"{key} is missing")
    return value


def save_report(report: QualityReport, run: RunDir) -> Path:
    """Write the run's report.json, whole or not at all, holding the run's writer lock (a
    RunBusy error names a live writer: a run in training keeps its folder to itself)."""
    path = run.path / REPORT_FILE
    with run.lock("report"):
        atomic_write(path, lambda tmp: write_json(tmp, report.to_json()))
    return path


def read_report(run: RunDir) -> QualityReport | None:
    """The run's last report, or None if it has none."""
    path = run.path / REPORT_FILE
    if not path.is_file():
        return None
    try:
        return QualityReport.from_json(read_json(path))
    except CheckpointError as exc:
        raise CheckpointError(f"{path} is damaged ({exc}); run lal report again") from None


def summary(report: QualityReport) -> str:
    """One line per column, for a list: `best: loss 4.74, loops 0/40, memorised 0.05`."""
    parts = []
    for c in report.columns:
        f = c.figures
        loss = "-" if f.val_loss is None or not math.isfinite(f.val_loss) else f"{f.val_loss:.2f}"
        mem = "-" if f.memorised_8 is None else f"{f.memorised_8:.2f}"
        parts.append(f"{c.label}: loss {loss}, loops {f.looping}/{f.samples}, memorised {mem}")
    return "; ".join(parts)
