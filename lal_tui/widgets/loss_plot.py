"""The loss plot: full history kept in memory, a downsampled view drawn on a timer.

Replotting on every step message swamps the app once a run is fast (plot cost grows with the
points drawn), so `LossPlot` only records points as they arrive and sets `dirty`; its owner
calls `redraw()` from a timer (once a second) while the plot is visible. Each redraw draws at
most a few points per column, averaged from the full history.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from textual.reactive import reactive
from textual_plotext import PlotextPlot

SMOOTHING = 0.9  # EMA weight of the past for the smoothed step-loss line
POINTS_PER_COLUMN = 2  # braille packs 2 points per character column


def downsample(
    xs: Sequence[float], ys: Sequence[float], max_points: int
) -> tuple[list[float], list[float]]:
    """At most about max_points (x, y) pairs: the mean of each run of consecutive points."""
    n = len(xs)
    if n <= max_points or max_points < 1:
        return list(xs), list(ys)
    stride = math.ceil(n / max_points)
    out_x, out_y = [], []
    for i in range(0, n, stride):
        chunk = ys[i : i + stride]
        out_x.append(xs[min(i + len(chunk) - 1, n - 1)])
        out_y.append(sum(chunk) / len(chunk))
    return out_x, out_y


def ema(values: Sequence[float], weight: float = SMOOTHING) -> list[float]:
    out, avg = [], None
    for v in values:
        avg = v if avg is None else weight * avg + (1 - weight) * v
        out.append(avg)
    return out


@dataclass
class Series:
    label: str
    xs: list[float]
    ys: list[float]
    color: str
    marker: str = "braille"


@dataclass
class VLine:
    x: float
    color: str
    label: str


@dataclass
class Drawn:
    """What the last redraw put on the plot (for tests and the status line)."""

    series: dict[str, int] = field(default_factory=dict)  # label -> points drawn
    vlines: list[VLine] = field(default_factory=list)
    log_scale: bool = False


def draw(plot: PlotextPlot, title: str, series: list[Series], vlines: list[VLine], log: bool):
    """Clear `plot` and draw the series (downsampled) and vertical markers on it."""
    plt = plot.plt
    plt.clear_figure()
    plt.title(title)
    plt.xlabel("iteration")
    width = max(plot.size.width, 20)
    drawn = Drawn(log_scale=log)
    for s in series:
        if not s.xs:
            continue
        xs, ys = downsample(s.xs, s.ys, width * POINTS_PER_COLUMN)
        if log:
            ys = [max(y, 1e-6) for y in ys]
        plt.plot(xs, ys, marker=s.marker, color=s.color, label=s.label)
        drawn.series[s.label] = len(xs)
    if log and drawn.series:
        plt.yscale("log")
    for v in vlines:
        plt.vline(v.x, v.color)
    drawn.vlines = list(vlines)
    plot.refresh()
    return drawn


class LossPlot(PlotextPlot):
    """Train and val loss per eval, the step loss, and best / early-stop markers."""

    smoothing: reactive[bool] = reactive(False)
    log_scale: reactive[bool] = reactive(False)

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.reset()

    def reset(self) -> None:
        self.step_iters: list[int] = []
        self.step_losses: list[float] = []
        self.step_ema: list[float] = []
        self.eval_iters: list[int] = []
        self.train_losses: list[float] = []
        self.val_losses: list[float] = []
        self.best_iter: int | None = None
        self.early_stop_iter: int | None = None
        self.drawn = Drawn()
        self.dirty = True

    # -- recording (cheap: called per message) -------------------------------------------------
    def add_step(self, iteration: int, loss: float) -> None:
        self.step_iters.append(iteration)
        self.step_losses.append(loss)
        prev = self.step_ema[-1] if self.step_ema else loss
        self.step_ema.append(SMOOTHING * prev + (1 - SMOOTHING) * loss)
        self.dirty = True

    def add_eval(self, iteration: int, train: float, val: float, best_iter: int | None) -> None:
        self.eval_iters.append(iteration)
        self.train_losses.append(train)
        self.val_losses.append(val)
        self.best_iter = best_iter
        self.dirty = True

    def set_early_stop(self, iteration: int) -> None:
        self.early_stop_iter = iteration
        self.dirty = True

    def watch_smoothing(self) -> None:
        self.dirty = True

    def watch_log_scale(self) -> None:
        self.dirty = True

    # -- drawing (on the timer) ----------------------------------------------------------------
    def series(self) -> list[Series]:
        steps = self.step_ema if self.smoothing else self.step_losses
        return [
            Series("step" + (" (ema)" if self.smoothing else ""), self.step_iters, steps, "gray"),
            Series("train", self.eval_iters, self.train_losses, "blue"),
            Series("val", self.eval_iters, self.val_losses, "orange"),
        ]

    def vlines(self) -> list[VLine]:
        lines = []
        if self.best_iter is not None:
            lines.append(VLine(self.best_iter, "green", "best"))
        if self.early_stop_iter is not None:
            lines.append(VLine(self.early_stop_iter, "red", "early stop"))
        return lines

    def title(self) -> str:
        parts = ["loss"]
        if self.best_iter is not None:
            parts.append(f"best @ {self.best_iter} (green)")
        if self.early_stop_iter is not None:
            parts.append(f"early stop @ {self.early_stop_iter} (red)")
        flags = [n for n, on in (("smoothed", self.smoothing), ("log", self.log_scale)) if on]
        if flags:
            parts.append(", ".join(flags))
        return " · ".join(parts)

    def redraw(self) -> None:
        self.drawn = draw(self, self.title(), self.series(), self.vlines(), self.log_scale)
        self.dirty = False
