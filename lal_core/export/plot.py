"""Loss curves to take away: a picture (PNG or SVG, drawn by matplotlib) and a CSV of the evals.

A picture shows, per run: the step loss smoothed (a moving average, dotted), the train loss at
each eval (dashed) and the val loss (solid), a star on the best val and a vertical line where
early stopping ended the run. It reads without colour: the three curves differ by line style,
and runs by the marker on their eval points (named in the legend).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lal_core.errors import LalError
from lal_core.runs.files import atomic_write
from lal_core.runs.folder import RunDir
from lal_core.runs.records import EvalRecord, RunRecord, StepRecord

PICTURE_FORMATS = ("png", "svg")
CSV_COLUMNS = ("run", "iter", "train_loss", "val_loss", "lr", "elapsed")
RUN_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")
SIZE_INCHES, DPI = (9.0, 5.0), 150  # 1350 x 750 pixels
SMOOTH_POINTS = 50  # the step loss is averaged over windows of about 1/50 of the run


@dataclass(frozen=True)
class Curves:
    """What a picture or a CSV needs from one run folder."""

    record: RunRecord
    steps: list[StepRecord]
    evals: list[EvalRecord]

    @property
    def run_id(self) -> str:
        return self.record.run_id


def read_curves(runs: Sequence[RunDir]) -> list[Curves]:
    """Each run's record and metrics; a run without an eval yet is a one-line error."""
    if not runs:
        raise LalError("name at least one run to plot")
    curves = []
    for run in runs:
        record = run.read()
        steps, evals = run.curves()
        if not evals:
            raise LalError(
                f"run {record.run_id} has no evals yet; plot it after its first eval "
                "(the first comes at iteration 0, then every --eval-interval steps)"
            )
        curves.append(Curves(record, steps, evals))
    return curves


def smoothed(values: Sequence[float], points: int = SMOOTH_POINTS) -> np.ndarray:
    """A centred moving average over windows of len/points values (the ends use what there is)."""
    y = np.asarray(values, dtype=np.float64)
    window = max(1, len(y) // points)
    if window == 1:
        return y
    kernel = np.ones(window)
    counts = np.convolve(np.ones_like(y), kernel, mode="same")
    return np.convolve(y, kernel, mode="same") / counts


def picture_format(path: Path) -> str:
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in PICTURE_FORMATS:
        raise LalError(f"cannot draw {path.name}: name a .png or .svg file")
    return fmt


def figure(curves: Sequence[Curves]):
    """A matplotlib Figure of the runs' curves (no pyplot: no global state, safe off the main
    thread)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    for n, run in enumerate(curves):
        _draw_run(ax, run, RUN_MARKERS[n % len(RUN_MARKERS)], f"C{n % 10}", len(curves) > 1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (cross-entropy, nats)")
    title = curves[0].run_id if len(curves) == 1 else f"{len(curves)} runs"
    ax.set_title(f"lal: {title}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def save_picture(curves: Sequence[Curves], path: Path) -> Path:
    """Draw the runs' curves into `path` (.png or .svg), written whole or not at all."""
    path = Path(path)
    fmt = picture_format(path)
    buffer = io.BytesIO()
    figure(curves).savefig(buffer, format=fmt)
    atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))
    return path


def _draw_run(ax, run: Curves, marker: str, color: str, named: bool) -> None:
    name = f"{run.run_id} " if named else ""
    if run.steps:
        x = [r.iteration for r in run.steps]
        y = smoothed([r.loss for r in run.steps])
        ax.plot(x, y, ":", color=color, alpha=0.7, label=f"{name}step loss (smoothed)")
    x = [r.iteration for r in run.evals]
    train = [r.train_loss for r in run.evals]
    ax.plot(x, train, "--", marker=marker, mfc="none", color=color, label=f"{name}train")
    ax.plot(x, [r.val_loss for r in run.evals], "-", marker=marker, color=color, label=f"{name}val")
    best = min(run.evals, key=lambda r: r.val_loss)
    label = f"{name}best val {best.val_loss:.3f} @ {best.iteration}"
    ax.plot([best.iteration], [best.val_loss], "*", ms=16, color=color, mec="black", label=label)
    if run.record.status == "early_stopped":
        stop = run.record.iteration
        ax.axvline(stop, ls="-.", lw=1, color=color, label=f"{name}early stop @ {stop}")


def save_csv(curves: Sequence[Curves], path: Path) -> Path:
    """One row per eval of every run: run, iter, train_loss, val_loss, lr, elapsed (seconds)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for run in curves:
        for r in run.evals:
            writer.writerow([run.run_id, r.iteration, r.train_loss, r.val_loss, r.lr, r.elapsed])
    path = Path(path)
    atomic_write(path, lambda tmp: tmp.write_text(out.getvalue()))
    return path


def default_picture(run: RunDir) -> Path:
    """Where `lal plot` without -o and the dashboard's `s` put a picture: in the run folder."""
    return run.path / "curves.png"
