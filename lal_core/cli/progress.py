"""The live progress line of a run on a terminal: iteration of max, step loss, tokens/s and the
time to the next eval and to the end, redrawn in place under the lines already printed.

Drawn with rich's `Progress` (as `lal prepare`'s bar is), on stdout when it is a terminal (on
stderr when only that is): the lines the run prints go above it through the same console, so
they stay as they are. Without a terminal there is no progress line at all, and what a log or
a pipe receives is what it always received. `rich` redraws only when told (no refresh thread),
so nothing else writes to the terminal while samples stream there.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from lal_core.runs import events as ev

SMOOTHING = 0.1  # weight of the newest step in the mean step time
REDRAW_SECONDS = 0.1  # at most this often; a line printed above it shows the latest step
WIDE_ENOUGH = 110  # terminal columns from which the bar is drawn beside the figures


def terminal() -> TextIO | None:
    """Where a progress line may go: stdout if it is a terminal, else stderr if it is one."""
    for stream in (sys.stdout, sys.stderr):
        if stream.isatty():
            return stream
    return None


@dataclass
class Pace:
    """Step time and eval time as measured so far, and what they say about the time left."""

    every: int = 0  # steps between evals (0: the run has no evals between its epochs)
    max_steps: int = 0
    step_s: float | None = None  # mean seconds per step, smoothed
    eval_s: float = 0.0  # the last eval's seconds, with its samples and checkpoint
    last: tuple[int, float] | None = None  # the previous step's iteration and elapsed
    evaluated: bool = False  # an eval came since that step

    def step(self, event: ev.StepDone) -> None:
        if self.last is not None and event.iteration == self.last[0] + 1:
            seconds = event.elapsed - self.last[1]
            if self.evaluated and self.step_s is not None:
                self.eval_s = max(0.0, seconds - self.step_s)
            elif not self.evaluated:
                s = self.step_s
                self.step_s = seconds if s is None else s + SMOOTHING * (seconds - s)
        self.last, self.evaluated = (event.iteration, event.elapsed), False

    def left(self, done: int) -> tuple[float, float] | None:
        """Seconds to the next eval and to the end, after `done` steps (None: not known yet)."""
        if self.step_s is None:
            return None
        steps = max(0, self.max_steps - done)
        if not self.every:
            return steps * self.step_s, steps * self.step_s
        # Evals come before the step at each multiple of `every`, and at max_steps.
        to_eval = min(-done % self.every, steps)
        evals = (self.max_steps - 1) // self.every - (done - 1) // self.every + 1
        return to_eval * self.step_s, steps * self.step_s + evals * self.eval_s


class ProgressLine:
    """A run's progress line on `stream` (a terminal). `print` puts a line above it; `close`
    takes it away (the next step draws it again: samples stream on the terminal between)."""

    def __init__(self, stream: TextIO) -> None:
        self.console = Console(file=stream, highlight=False)
        self.on_stdout = stream is sys.stdout  # else the lines go to stdout, not through here
        self.pace = Pace()
        self.label = "iter"
        self._progress: Progress | None = None
        self._task = 0
        self._drawn = 0.0  # when it was last drawn (time.monotonic)

    def started(self, event: ev.RunStarted) -> None:
        self.close()
        every = event.train_config.evals_every if event.train_config is not None else 0
        self.pace = Pace(every=every, max_steps=event.max_steps)
        self.label = "iter" if event.kind == "train" else "step"

    def step(self, event: ev.StepDone) -> None:
        self.pace.step(event)
        done = event.iteration + 1
        info = f"loss {event.loss:.4f} | {event.tokens_per_sec:,.0f} tok/s"
        if event.mfu is not None:
            info += f" | {event.mfu:.0%} MFU"
        left = self.pace.left(done)
        if left is not None:
            if self.pace.every:
                info += f" | eval in {clock(left[0])}"
            info += f" | end in {clock(left[1])}"
        total = max(self.pace.max_steps, done)
        progress = self._progress or self._new()
        progress.update(
            self._task, completed=done, total=total, what=f"{self.label} {done}/{total}", info=info
        )
        now = time.monotonic()
        if self._progress is None:
            progress.start()  # drawn first with this step's figures
            self._progress, self._drawn = progress, now
        elif now - self._drawn >= REDRAW_SECONDS:  # `lal watch` replays thousands at once
            progress.refresh()
            self._drawn = now

    def evaluated(self) -> None:
        self.pace.evaluated = True

    def _new(self) -> Progress:
        columns = [TextColumn("{task.fields[what]}")]
        if self.console.width >= WIDE_ENOUGH:
            columns.append(BarColumn(bar_width=self.console.width - WIDE_ENOUGH + 10))
        columns.append(TextColumn("{task.fields[info]}"))
        progress = Progress(
            *columns,
            console=self.console,
            transient=True,  # gone when it stops: the eval lines stay as they are
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._task = progress.add_task("", what="", info="")
        return progress

    def print(self, line: str) -> None:
        self.console.print(line, markup=False, emoji=False, soft_wrap=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class CountProgress:
    """`progress(done, total, what)` for work counted in pieces (`lal report`'s drafts): on a
    terminal a bar redrawn in place, else a line on stderr for each piece, as always."""

    def __init__(self) -> None:
        self.stream = terminal()
        self._progress: Progress | None = None
        self._task = 0

    def __enter__(self) -> CountProgress:
        if self.stream is not None:
            from rich.progress import MofNCompleteColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=True,
            )
            self._task = self._progress.add_task("", total=None)
            self._progress.start()
        return self

    def __call__(self, done: int, total: int, what: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total, description=what)
        elif total and done < total:
            print(f"[{done}/{total}] {what}", file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def clock(seconds: float) -> str:
    """1:02:03, 4:05 or 0:07."""
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"
