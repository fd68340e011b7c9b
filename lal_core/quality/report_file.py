"""A run's quality report as data: typed, saved as the run's `report.json` (what `lal report`
writes and the dashboard reads) and shown as text (its table of figures, its samples side by
side). Kept apart from `report.py`, which draws the samples, so that reading or showing a report
imports no framework.
"""

from __future__ import annotations

import math
import textwrap
import time
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any

from lal_core.errors import CheckpointError
from lal_core.runs.files import atomic_write, read_json, write_json
from lal_core.runs.folder import RunDir
from lal_core.runs.records import Figures, read_fields, write_fields

REPORT_FILE = "report.json"
FORMAT = 1


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


# -- for people --------------------------------------------------------------------------------
ROWS = (
    ("val loss", "val_loss", "{:.4f}"),
    ("distinct-1", "distinct_1", "{:.3f}"),
    ("distinct-2", "distinct_2", "{:.3f}"),
    ("repeated 4-grams", "repeated_4", "{:.3f}"),
    ("samples in a loop", "looping", None),
    ("memorised 8-grams", "memorised_8", "{:.3f}"),
    ("longest verbatim (tokens)", "longest", "{}"),
    ("invented words", "invented_words", "{:.3f}"),
    ("answers closed", "closed", "{:.0%}"),
)


# Two standard errors of a difference: a gap inside it is not told apart from the draw's noise.
WITHIN = 2.0
NOISE_NOTE = (
    "± one standard error over the samples\n"
    "≈ within two standard errors of the first column's figure: not a difference"
)


def estimate(figures: Figures, key: str) -> tuple[float, float] | None:
    """A row's figure and its standard error, where it has one: the means' from the samples,
    a loop count's as a binomial share's, taken at (k + 1) / (n + 2) so that none in n
    samples is not read as certainty."""
    if key == "looping":
        n = figures.samples
        if n < 2:
            return None
        smoothed = (figures.looping + 1) / (n + 2)
        return figures.looping / n, (smoothed * (1 - smoothed) / n) ** 0.5
    value, error = getattr(figures, key), getattr(figures, f"{key}_se", None)
    return (value, error) if value is not None and error is not None else None


def within_noise(mine: tuple[float, float], theirs: tuple[float, float]) -> bool:
    """Whether two (figure, standard error) pairs differ by no more than WITHIN standard errors
    of their difference: a gap the draw's noise explains."""
    return abs(mine[0] - theirs[0]) <= WITHIN * math.hypot(mine[1], theirs[1])


def _cell(figures: Figures, key: str, fmt: str | None, first: Figures) -> str:
    """A row's cell: the figure, ± its standard error, and ≈ where it is within WITHIN standard
    errors of the first column's (the first column itself is the reference)."""
    value = getattr(figures, key)
    if key == "looping":
        text = f"{value}/{figures.samples}"
    else:
        text = "-" if value is None else fmt.format(value)
    mine, theirs = estimate(figures, key), estimate(first, key)
    if mine is None:
        return text
    scale = figures.samples if key == "looping" else 1
    text += f" ±{mine[1] * scale:{'.1f' if key == 'looping' else '.3f'}}"
    if figures is not first and theirs is not None:
        text += " ≈" if within_noise(mine, theirs) else "  "
    return text


def format_report(report: QualityReport, show_samples: bool = False, width: int = 100) -> str:
    """The figures as a table, a column per checkpoint and one for held-out text, each with its
    standard error and a mark where it is within noise of the first column; then each column's
    longest verbatim stretch, and the samples themselves on request."""
    what = "questions" if report.mode == "chat" else "prompts"
    head = (
        f"{len(report.prompts)} {what} x {report.samples} samples x up to {report.tokens} "
        f"tokens, seed {report.seed}; text: {Path(report.corpus).name or 'none recorded'}"
    )
    names = [c.label for c in report.columns]
    figures = [c.figures for c in report.columns]
    if report.baseline is not None:
        names, figures = [*names, "held-out text"], [*figures, report.baseline]
    cell = max(18, *(len(x) + 2 for x in names))
    lines = [head, ""]
    lines.append(f"{'':<26}" + "".join(f"{x:>{cell}}" for x in names))
    for label, key, fmt in ROWS:
        if key == "closed" and report.mode != "chat":
            continue
        cells = [_cell(f, key, fmt, figures[0]) for f in figures]
        lines.append(f"{label:<26}" + "".join(f"{c:>{cell}}" for c in cells))
    if any(f.samples > 1 for f in figures):
        lines.append(NOISE_NOTE)
    settings = {c.settings for c in report.columns}
    if len(settings) == 1:
        lines.append(f"\nsampling: {settings.pop()}")
    else:
        lines += ["\nsampling:"] + [f"  {c.label}: {c.settings}" for c in report.columns]
    if report.baseline is not None:  # a corpus, so a training split to search
        lines.append("\nlongest verbatim stretch from the training split:")
        for name, f in zip(names, figures, strict=True):
            text = f.longest_text.replace("\n", " / ")
            lines.append(f"  {name}: {f.longest} tokens: {text!r}")
    if show_samples:
        lines += ["", format_samples(report, width)]
    return "\n".join(lines).rstrip() + "\n"


def format_samples(report: QualityReport, width: int = 100) -> str:
    """Each prompt's samples, column by column: side by side for two columns."""
    lines = []
    pair = len(report.columns) == 2
    col = max((width - 3) // 2, 20)
    for i, prompt in enumerate(report.prompts):
        tag = ""
        if report.mode == "chat":
            tag = "  (in training pairs)" if report.trained[i] else "  (NOT in training pairs)"
        shown = f"Q: {prompt}" if report.mode == "chat" else f"prompt: {prompt!r}"
        lines.append(f"{shown}{tag}")
        for j in range(report.samples):
            texts = [
                c.texts[i][j].strip().replace("\n", " / ") or "(nothing)" for c in report.columns
            ]
            if pair:
                left, right = (textwrap.wrap(t, col) or [""] for t in texts)
                if j == 0:
                    names = [c.label for c in report.columns]
                    lines.append(f"  {names[0]:<{col}} | {names[1]}")
                for a, b in zip_longest(left, right, fillvalue=""):
                    lines.append(f"  {a:<{col}} | {b}".rstrip())
                lines.append("")
            else:
                for c, t in zip(report.columns, texts, strict=True):
                    lines.append(f"  [{c.label}] {t}")
        lines.append("")
    return "\n".join(lines).rstrip()
