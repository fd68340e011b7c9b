"""Loss curves to take away: a picture (PNG or SVG, drawn by matplotlib) and a CSV of the evals.

A picture shows, per run: the step loss smoothed (a moving average, dotted), the train loss at
each eval (dashed) and the val loss (solid), a star on the best val and a vertical line where
early stopping ended the run; the val loss in bits per byte on the right-hand axis. It reads
without colour: the three curves differ by line style, and runs by the marker on their eval
points (named in the legend). Where the runs drew samples at their evals, a second panel below
shows how they write over the same iterations: distinct-2, repeated 4-grams, the share of
samples in a loop and of 8-grams memorised, each solid, and the same figure of held-out text
dashed, with the best and early-stop markers again.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lal_core.errors import LalError
from lal_core.runs.files import atomic_write
from lal_core.runs.folder import RunDir
from lal_core.runs.records import EvalRecord, Figures, RunRecord, SamplesRecord, StepRecord

PICTURE_FORMATS = ("png", "svg")
# The writing figures of an eval's samples, drawn and written as shares (0..1): (CSV column,
# label, the figure).
WRITING = (
    ("distinct_2", "distinct-2", lambda f: f.distinct_2),
    ("repeated_4", "repeated 4-grams", lambda f: f.repeated_4),
    ("in_loop", "samples in a loop", lambda f: f.looping / f.samples if f.samples else None),
    ("memorised_8", "memorised 8-grams", lambda f: f.memorised_8),
    ("invented_words", "invented words", lambda f: f.invented_words),
)
CSV_COLUMNS = (
    "run",
    "iter",
    "train_loss",
    "val_loss",
    "val_bpb",
    "lr",
    "elapsed",
    *(column for column, _, _ in WRITING),
    "longest_verbatim",
    *(f"held_out_{column}" for column, _, _ in WRITING),
)
RUN_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")
SIZE_INCHES, DPI = (9.0, 5.0), 150  # 1350 x 750 pixels
SMOOTH_POINTS = 50  # the step loss is averaged over windows of about 1/50 of the run


@dataclass(frozen=True)
class Curves:
    """What a picture or a CSV needs from one run folder."""

    record: RunRecord
    steps: list[StepRecord]
    evals: list[EvalRecord]
    samples: list[SamplesRecord] = field(default_factory=list)  # drawn whole, with figures

    def figures_at(self, iteration: int) -> SamplesRecord | None:
        return next((s for s in self.samples if s.iteration == iteration), None)

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
        records = run.read_metrics()
        steps = [r for r in records if isinstance(r, StepRecord)]
        evals = [r for r in records if isinstance(r, EvalRecord)]
        samples = [r for r in records if isinstance(r, SamplesRecord) and r.figures is not None]
        if not evals:
            raise LalError(
                f"run {record.run_id} has no evals yet; plot it after its first eval "
                "(the first comes at iteration 0, then every --eval-interval steps)"
            )
        curves.append(Curves(record, steps, evals, samples))
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

    writing = any(run.samples for run in curves)
    width, height = SIZE_INCHES
    fig = Figure(figsize=(width, height * (1.8 if writing else 1)), dpi=DPI, layout="constrained")
    ax = fig.add_subplot(2, 1, 1) if writing else fig.add_subplot()
    for n, run in enumerate(curves):
        _draw_run(ax, run, RUN_MARKERS[n % len(RUN_MARKERS)], f"C{n % 10}", len(curves) > 1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (cross-entropy, nats)")
    _bits_per_byte_axis(ax, curves)
    title = curves[0].run_id if len(curves) == 1 else f"{len(curves)} runs"
    ax.set_title(f"lal: {title}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    if writing:
        _writing_panel(fig.add_subplot(2, 1, 2, sharex=ax), curves)
    return fig


def _bits_per_byte_axis(ax, curves: Sequence[Curves]) -> None:
    """The val loss in bits per byte on the right, where every run has one scale (the same
    text's val split): bits per byte are nats per token times a constant of that text."""
    scales = {
        round(r.val_bpb / r.val_loss, 9)
        for run in curves
        for r in run.evals
        if r.val_bpb and r.val_loss
    }
    if len(scales) == 1:
        k = scales.pop()
        axis = ax.secondary_yaxis("right", functions=(lambda v: v * k, lambda b: b / k))
        axis.set_ylabel("val loss (bits per byte)")


def _writing_panel(ax, curves: Sequence[Curves]) -> None:
    """The writing figures of each run's eval samples (solid), held-out text's (dashed)."""
    for n, run in enumerate(curves):
        marker = RUN_MARKERS[n % len(RUN_MARKERS)]
        name = f"{run.run_id} " if len(curves) > 1 else ""
        x = [s.iteration for s in run.samples]
        for k, (_, label, of) in enumerate(WRITING):
            y = [of(s.figures) for s in run.samples]
            if all(v is None for v in y):
                continue
            y = [np.nan if v is None else v for v in y]
            ax.plot(x, y, "-", marker=marker, ms=4, color=f"C{k}", label=f"{name}{label}")
            held = run.samples[-1].held_out
            if held is not None and of(held) is not None and n == 0:
                ax.axhline(of(held), ls="--", lw=1, color=f"C{k}", alpha=0.8)
        _markers(ax, run, f"C{7 + n % 3}", name)
    ax.plot([], [], "--", color="grey", label="held-out text (dashed)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("share (of 2-grams, 4-grams, samples, 8-grams, words)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("how it writes: samples drawn at each eval")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", ncol=2)


def _markers(ax, run: Curves, color: str, name: str) -> None:
    """The best checkpoint's iteration and the early stop, as vertical lines."""
    best = min(run.evals, key=lambda r: r.val_loss)
    ax.axvline(best.iteration, ls=":", lw=1.2, color=color, label=f"{name}best @ {best.iteration}")
    if run.record.status == "early_stopped":
        stop = run.record.iteration
        ax.axvline(stop, ls="-.", lw=1, color=color, label=f"{name}early stop @ {stop}")


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
    bpb = f" ({best.val_bpb:.3f} bpb)" if best.val_bpb else ""
    label = f"{name}best val {best.val_loss:.3f}{bpb} @ {best.iteration}"
    ax.plot([best.iteration], [best.val_loss], "*", ms=16, color=color, mec="black", label=label)
    if run.record.status == "early_stopped":
        stop = run.record.iteration
        ax.axvline(stop, ls="-.", lw=1, color=color, label=f"{name}early stop @ {stop}")


def save_csv(curves: Sequence[Curves], path: Path) -> Path:
    """One row per eval of every run (CSV_COLUMNS): its losses (val also in bits per byte),
    lr, elapsed seconds, and the writing figures of the samples drawn after it and of held-out
    text (empty where none were drawn)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for run in curves:
        for r in run.evals:
            drawn = run.figures_at(r.iteration)
            figures = drawn.figures if drawn is not None else None
            held = drawn.held_out if drawn is not None else None
            writer.writerow(
                [run.run_id, r.iteration, r.train_loss, r.val_loss, _cell(r.val_bpb), r.lr]
                + [r.elapsed, *_writing_cells(figures)]
                + [figures.longest if figures is not None else ""]
                + _writing_cells(held)
            )
    path = Path(path)
    atomic_write(path, lambda tmp: tmp.write_text(out.getvalue()))
    return path


def _cell(value: float | None) -> float | str:
    return "" if value is None else value


def _writing_cells(figures: Figures | None) -> list[float | str]:
    return [_cell(of(figures) if figures is not None else None) for _, _, of in WRITING]


def default_picture(run: RunDir) -> Path:
    """Where `lal plot` without -o and the dashboard's `s` put a picture: in the run folder."""
    return run.path / "curves.png"
