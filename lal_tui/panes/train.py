"""Train pane: the live loss plot, lr and tokens/s sparklines, the samples, a status line and
the log.

The pane shows the run the app follows (`lal_tui.work.following`): started here, elsewhere,
live or finished. The following job posts the run's events here (`TrainEvent`), the run's whole
log first, and they are only recorded; a timer draws what changed once a second, and only
while the pane is on screen (at once when it comes on screen). The samples drawn after each eval
stream as they are written (`widgets.eval_samples`): a faster timer draws the sample view alone.

Keys: `[` / `]` step back and forth through the evals' samples, `s` shows an eval's next sample,
`w` switches the plot between the loss and the writing figures of the samples.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, Log, Sparkline

from lal_core.runs.events import (
    CheckpointSaved,
    EarlyStopped,
    EvalDone,
    Event,
    Preparing,
    RunFailed,
    RunFinished,
    RunStarted,
    SamplesDone,
    StepDone,
)
from lal_tui.widgets.eval_samples import SAMPLE_EVENTS, SampleView
from lal_tui.widgets.fit import FittingLine
from lal_tui.widgets.format import duration
from lal_tui.widgets.loss_plot import LossPlot, downsample
from lal_tui.work.messages import EngineError, JobEnded, TrainEvent

# A redraw of the pane costs the dashboard ~25 ms of CPU, taken from the run on a machine of few
# cores: once a second kept the run within a few percent of `lal train` (bench/tui_latency.py).
REDRAW_SECONDS = 1.0
# A sample streams hundreds of pieces a second: drawn 4 times a second (~1 ms each), not per piece.
SAMPLES_REDRAW_SECONDS = 0.25
TOKS_SMOOTHING = 0.9
EVALS = Binding.Group("Evals", compact=True)


class TrainPane(Vertical):
    """Everything about the current (or last) training run."""

    BINDINGS = [
        Binding("m", "toggle_smoothing", "Smoothing"),
        Binding("l", "toggle_log", "Log"),
        Binding("w", "toggle_writing", "Writing"),
        Binding("left_square_bracket", "step_samples(-1)", "Older", key_display="[", group=EVALS),
        Binding("right_square_bracket", "step_samples(1)", "Newer", key_display="]", group=EVALS),
        # not in the footer (80 columns hold the rest): in the sample view's title and the help
        Binding("s", "next_sample", "Next sample", show=False),
    ]

    def compose(self) -> ComposeResult:
        status = "no run yet: press t to train (settings in Setup, key 1)"
        yield FittingLine(status, id="train-status")
        yield LossPlot(id="loss-plot")
        with Horizontal(id="sparks"):
            yield Label("lr", classes="spark-label")
            yield Sparkline([], id="lr-spark")
            yield Label("tok/s", classes="spark-label")
            yield Sparkline([], id="toks-spark")
        self.sample_view = SampleView(id="train-samples")  # kept: a piece of text each call
        yield self.sample_view
        yield Log(id="train-log", max_lines=2000)

    @property
    def plot(self) -> LossPlot:
        return self.query_one(LossPlot)

    @property
    def samples(self) -> SampleView:
        return self.sample_view

    def on_mount(self) -> None:
        self.reset()
        self.set_interval(REDRAW_SECONDS, self.tick)
        self.set_interval(SAMPLES_REDRAW_SECONDS, self.tick_samples)

    def reset(self) -> None:
        self.state = "idle"
        self.run_id: str | None = None
        self.device = "-"
        self.max_iters: int | None = None
        self.iteration: int | None = None
        self.best_val: float | None = None
        self.best_iter: int | None = None
        self.tok_s: float | None = None
        self.elapsed: float | None = None
        self.lr_history: list[float] = []
        self.toks_history: list[float] = []
        self.steps: list[int] = []
        self.plot.reset()
        self.samples.reset()
        self.dirty = True

    # -- events -------------------------------------------------------------------------------
    @on(TrainEvent)
    def train_event(self, message: TrainEvent) -> None:
        if self.app.is_running:  # else shutting down: what the follower had queued can go
            self.record(message.event)

    @on(EngineError)
    def failed(self, message: EngineError) -> None:
        if not message.stale:
            self.note(f"error: {message.message}", state="failed")

    def record(self, event: Event) -> None:
        """Fold one engine event into the pane's state (drawing happens on the timer)."""
        if isinstance(event, SAMPLE_EVENTS):
            self.record_samples(event)
            return
        log = self.query_one(Log)
        if isinstance(event, StepDone):
            self.iteration = event.iteration
            self.elapsed = event.elapsed
            self.steps.append(event.iteration)
            self.lr_history.append(event.lr)
            self.toks_history.append(event.tokens_per_sec)
            t = event.tokens_per_sec
            self.tok_s = t if self.tok_s is None else TOKS_SMOOTHING * self.tok_s + 0.1 * t
            self.plot.add_step(event.iteration, event.loss)
        elif isinstance(event, EvalDone):
            self.iteration = event.iteration
            self.elapsed = event.elapsed
            self.best_val, self.best_iter = event.best_val, event.best_iter
            self.plot.add_eval(event.iteration, event.train_loss, event.val_loss, event.best_iter)
            log.write_line(event.line)
        elif isinstance(event, RunStarted):
            if event.run_id != self.run_id:
                self.reset()  # a resumed run's later session adds to its history
            self.state = "running"
            self.run_id = event.run_id
            self.device = f"{event.backend}/{event.device}"
            self.max_iters = event.max_steps or None
            if event.train_config is not None:
                self.samples.expected = event.train_config.eval_samples
            log.write_line(event.header)
        elif isinstance(event, Preparing):
            log.write_line(event.line)
        elif isinstance(event, EarlyStopped):
            self.plot.set_early_stop(event.iteration)
            log.write_line(event.line)
        elif isinstance(event, RunFinished):
            self.state = event.status.replace("_", " ")
            self.elapsed = event.elapsed
            self.iteration = event.iteration
            log.write_line(event.line)
        elif isinstance(event, RunFailed):
            self.state = "failed"
            log.write_line(f"failed: {event.message}")
        elif isinstance(event, CheckpointSaved) and event.kind == "final":
            log.write_line(f"saved {event.kind} checkpoint @ iter {event.iteration}: {event.path}")
        self.dirty = True

    def record_samples(self, event: Event) -> None:
        """A piece of a sample costs an append; whole samples add their figures to the plot
        and a line to the log."""
        self.samples.record(event)
        if not isinstance(event, SamplesDone):
            return
        if event.figures is not None:
            self.plot.add_figures(event.iteration, event.figures, event.held_out)
            line = f"writing @ {event.iteration}: {event.figures.describe(event.held_out)}"
        elif event.status == "stopped":
            line = f"samples @ {event.iteration}: stopped"
        else:
            line = event.line or f"samples @ {event.iteration}: {event.status}"
        self.query_one(Log).write_line(line)

    @on(JobEnded)
    def follow_ended(self, message: JobEnded) -> None:
        """The job following the run ended. If the run's log did not tell how the run ended
        (the job returned none of its events), say it here: stopped before it took its folder,
        or failed (a notification says why)."""
        if message.stale or not self.app.is_running or message.result is not None:
            return
        if self.state == "stopping":
            self.note("stopped before it started", state="stopped")
        elif self.state in ("starting", "running"):
            self.note("training failed (see the notification)", state="failed")

    def follow_started(self, line: str) -> None:
        """The app follows a run here now: one it starts, or one already there."""
        self.reset()
        self.note(line, state="starting")

    def stop_asked(self) -> None:
        self.note("stopping after this step…", state="stopping")

    def note(self, line: str, state: str | None = None) -> None:
        self.query_one(Log).write_line(line)
        if state is not None:
            self.state = state
            self.dirty = True

    def action_toggle_smoothing(self) -> None:
        self.plot.smoothing = not self.plot.smoothing
        self.redraw_soon()

    def action_toggle_log(self) -> None:
        self.plot.log_scale = not self.plot.log_scale
        self.redraw_soon()

    def action_toggle_writing(self) -> None:
        self.plot.view = "writing" if self.plot.view == "loss" else "loss"
        self.redraw_soon()

    def action_step_samples(self, by: int) -> None:
        if self.samples.step(by):
            self.samples.redraw()

    def action_next_sample(self) -> None:
        if self.samples.next_sample():
            self.samples.redraw()

    # -- drawing ------------------------------------------------------------------------------
    def status_forms(self) -> tuple[str, str, str, str]:
        """The status line, fullest first: at 80 columns the device goes (the log's first
        line names it), then the words "iter" and "val", then tokens/s and the time so far."""
        it = "-" if self.iteration is None else f"{self.iteration:,}"
        if self.max_iters:
            it += f"/{self.max_iters:,}"
        best = "-" if self.best_val is None else f"{self.best_val:.4f} @ {self.best_iter}"
        toks = "-" if self.tok_s is None else f"{self.tok_s:,.0f}"
        eta = None
        if self.state == "running" and self.elapsed and self.iteration and self.max_iters:
            done = self.iteration + 1
            eta = self.elapsed / done * max(self.max_iters - done, 0)
        speed = f"{toks} tok/s | {duration(self.elapsed)} | ETA {duration(eta)}"
        without_device = f"{self.state} | iter {it} | best val {best} | {speed}"
        return (
            f"{without_device} | {self.device}",
            without_device,
            f"{self.state} | {it} | best {best} | {speed}",
            f"{self.state} | {it} | best {best} | ETA {duration(eta)}",
        )

    def redraw_soon(self) -> None:
        """Draw what changed after the next refresh (the pane shown, a key pressed), not at the
        next tick."""
        self.dirty = True
        self.call_after_refresh(self.tick)

    def tick(self) -> None:
        if not (self.dirty or self.plot.dirty) or not self.is_on_screen:
            return
        self.redraw()

    def tick_samples(self) -> None:
        if self.samples.dirty and self.is_on_screen:
            self.samples.redraw()

    def redraw(self) -> None:
        self.query_one("#train-status", FittingLine).show(*self.status_forms())
        for spark_id, values in (
            ("#lr-spark", self.lr_history),
            ("#toks-spark", self.toks_history),
        ):
            spark = self.query_one(spark_id, Sparkline)
            width = max(spark.size.width, 10)
            spark.data = downsample(self.steps, values, width)[1] if values else []
        if self.plot.dirty:
            self.plot.redraw()
        if self.samples.dirty:
            self.samples.redraw()
        self.dirty = False
