"""The loss plot: full history kept in memory, a downsampled view drawn on a timer.

Replotting on every step message swamps the app once a run is fast (plot cost grows with the
points drawn), so `LossPlot` only records points as they arrive and sets `dirty`; its owner
calls `redraw()` from a timer (once a second) while the plot is visible. Each redraw draws at
most a few points per column, averaged from the full history.

It has two views (`view`): "loss" (step, train and val loss) and "writing", the writing figures
of the samples drawn after each eval (`lal_core.runs.records.Figures`, each a share in 0..1)
over the eval iterations, with the held-out text's figures as dashed lines: the baseline, what
real text after the same prompts scores. Both views mark the best checkpoint and an early stop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from textual.reactive import reactive
from textual_plotext import PlotextPlot

from lal_core.runs.records import Figures

SMOOTHING = 0.9  # EMA weight of the past for the smoothed step-loss line
POINTS_PER_COLUMN = 2  # braille packs 2 points per character column
VIEWS = ("loss", "writing")
# Below this many rows (the Train pane at 80x24) the x axis goes unlabelled: a row more of data.
LABELLED_ROWS = 14
# A held-out line is drawn first, one dash per column: the samples' lines drawn over it stay
# whole, and a dashed line reads as a baseline without a legend row of its own.
DASH = "╌"
# The writing figures plotted: label, its share in 0..1 from one eval's Figures (None: not
# measured), colour. Looping is a count of samples: plotted as the share of them.
WRITING: tuple[tuple[str, Callable[[Figures], float | None], str], ...] = (
    ("distinct-2", lambda f: f.distinct_2, "blue"),
    ("repeated 4-grams", lambda f: f.repeated_4, "orange"),
    ("in a loop", lambda f: f.looping / f.samples if f.samples else None, "magenta"),
    ("memorised 8-grams", lambda f: f.memorised_8, "cyan"),
    ("invented words", lambda f: f.invented_words, "yellow"),
)


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


def dashed(x0: float, x1: float, columns: int) -> list[float]:
    """About one x per character column from x0 to x1: a horizontal line of DASH markers."""
    n = max(columns, 2)
    return [x0] if x1 <= x0 else [x0 + (x1 - x0) * i / (n - 1) for i in range(n)]


def writing_series(
    iters: Sequence[int], figures: Sequence[Figures], held_out: Figures | None, columns: int
) -> list[Series]:
    """The writing figures over `iters`, each held-out figure a dashed line across them (first,
    so that the samples' lines are drawn over it)."""
    lines, points = [], []
    for label, value, color in WRITING:
        pairs = [(x, v) for x, f in zip(iters, figures, strict=True) if (v := value(f)) is not None]
        points.append(Series(label, [x for x, _ in pairs], [y for _, y in pairs], color))
        base = value(held_out) if held_out is not None and iters else None
        if base is not None:
            xs = dashed(iters[0], iters[-1], columns)
            kind = dict(marker=DASH, legend=False, joined=False)
            lines.append(Series(f"held-out {label}", xs, [base] * len(xs), color, **kind))
    return lines + points


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
    legend: bool = True  # labelled in the plot's legend (else only recorded in `Drawn`)
    joined: bool = True  # a line through the points (else the points alone)


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


def draw(
    plot: PlotextPlot,
    title: str,
    series: list[Series],
    vlines: list[VLine],
    log: bool,
    ylim: tuple[float, float] | None = None,
    xlabel: str | None = "iteration",
) -> Drawn:
    """Clear `plot` and draw the series (downsampled) and vertical markers on it."""
    plt = plot.plt
    plt.clear_figure()
    plt.title(title)
    if xlabel:
        plt.xlabel(xlabel)
    width = max(plot.size.width, 20)
    drawn = Drawn(log_scale=log)
    for s in series:
        if not s.xs:
            continue
        xs, ys = downsample(s.xs, s.ys, width * POINTS_PER_COLUMN)
        if log:
            ys = [max(y, 1e-6) for y in ys]
        how = plt.plot if s.joined else plt.scatter
        how(xs, ys, marker=s.marker, color=s.color, label=s.label if s.legend else None)
        drawn.series[s.label] = len(xs)
    if log and drawn.series:
        plt.yscale("log")
    if ylim is not None:
        plt.ylim(*ylim)
    for v in vlines:
        plt.vline(v.x, v.color)
    drawn.vlines = list(vlines)
    plot.refresh()
    return drawn


class LossPlot(PlotextPlot):
    """Train and val loss per eval, the step loss, and best / early-stop markers."""

    smoothing: reactive[bool] = reactive(False)
    log_scale: reactive[bool] = reactive(False)
    view: reactive[str] = reactive("loss")  # one of VIEWS

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
        self.writing_iters: list[int] = []  # the evals whose samples have figures
        self.figures: list[Figures] = []
        self.held_out: Figures | None = None
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

    def add_figures(self, iteration: int, figures: Figures, held_out: Figures | None) -> None:
        """The writing figures of the samples drawn at `iteration` (a resumed run draws again
        from where it resumed: what it had drawn there and later is replaced)."""
        while self.writing_iters and self.writing_iters[-1] >= iteration:
            self.writing_iters.pop()
            self.figures.pop()
        self.writing_iters.append(iteration)
        self.figures.append(figures)
        self.held_out = held_out if held_out is not None else self.held_out
        self.dirty = True

    def set_early_stop(self, iteration: int) -> None:
        self.early_stop_iter = iteration
        self.dirty = True

    def watch_smoothing(self) -> None:
        self.dirty = True

    def watch_log_scale(self) -> None:
        self.dirty = True

    def watch_view(self) -> None:
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

    def title(self, width: int = 1000) -> str:
        """The view's title; without the markers' colours if it would not fit `width` (plotext
        leaves out a title wider than the plot)."""
        if self.view == "writing":
            parts = ["writing", f"{DASH}{DASH} held-out text"]
            if not self.writing_iters:
                parts = ["writing: none yet (samples come after each eval)"]
        else:
            parts = ["loss"]
        markers = []
        if self.best_iter is not None:
            markers.append((f"best @ {self.best_iter}", " (green)"))
        if self.early_stop_iter is not None:
            markers.append((f"early stop @ {self.early_stop_iter}", " (red)"))
        flags = [n for n, on in (("smoothed", self.smoothing), ("log", self.log_scale)) if on]
        tail = [", ".join(flags)] if flags and self.view == "loss" else []
        title = " · ".join([*parts, *(m + colour for m, colour in markers), *tail])
        if len(title) > width - 2:
            title = " · ".join([*parts, *(m for m, _ in markers), *tail])
        return title

    def redraw(self) -> None:
        width, height = self.size
        xlabel = "iteration" if height >= LABELLED_ROWS else None
        if self.view == "writing":
            columns = max(width - 6, 10)  # less the y axis's labels
            series = writing_series(self.writing_iters, self.figures, self.held_out, columns)
            log, ylim = False, (0.0, 1.0)  # shares: the same axis at every eval
        else:
            series, log, ylim = self.series(), self.log_scale, None
        self.drawn = draw(self, self.title(width), series, self.vlines(), log, ylim, xlabel)
        self.dirty = False
