"""A run's log to a tracker, and the trackers of a live run in processes of their own.

`send` reads one job's log of a run folder ("train" or "sft") through `RunFollower`, from the
start; if the run is still being written it follows it to its end. Each event becomes a call of
the small `Tracker` interface (scalars, samples, summary), with the wall time the log gave the
event. So a tracker fed live and one fed after the fact (`lal track`) receive the same calls.

`LiveTrackers` is how `lal train --report-to` and `lal sft --report-to` use it without any risk
to the run: at RunStarted it starts `lal track RUN --report-to NAME --job JOB` as a child
process per tracker, in a session of its own, at a low priority, with its output in the run's
`tracking/` folder. The run never calls a tracker, never waits for one and shares no pipe with
one (a full pipe could block a writer): a tracker that crashes, hangs on a network or fills its
disk stops only itself. After the run has ended, the command waits a little for the children to
finish sending, then says where each run went, or why it did not.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lal_core.errors import LalError
from lal_core.runs import events as ev
from lal_core.runs.folder import RunDir
from lal_core.runs.follow import RunFollower
from lal_core.runs.records import Figures, write_fields
from lal_core.trackers import TRACKERS

TRACKING = "tracking"  # the trackers' own folder in a run folder
POLL_SECONDS = 0.5  # how often a live tracker looks for new lines in the log
WAIT_SECONDS = 20.0  # after the run, how long a command waits for its trackers to finish
FIGURES = (
    "distinct_2",
    "repeated_4",
    "looping",
    "memorised_8",
    "longest",
    "invented_words",
    "closed",
)


class Tracker(Protocol):
    def start(self, config: dict[str, Any], wall_time: float) -> None: ...

    def scalars(self, step: int, values: dict[str, float], wall_time: float) -> None: ...

    def samples(self, step: int, rows: list[tuple[str, str]], wall_time: float) -> None: ...

    def summary(self, values: dict[str, Any]) -> None: ...

    def finish(self, status: str) -> str: ...  # a line for people: where the run went


def check_installed(names: list[str]) -> None:
    """A one-line error for a tracker whose extra is not installed (before a run starts)."""
    for name in names:
        if importlib.util.find_spec(name) is None:
            raise LalError(
                f"--report-to {name} needs the {name} package: uv sync --extra {name} "
                f"(or pip install {name})"
            )


def open_tracker(name: str, run: RunDir, job: str) -> Tracker:
    check_installed([name])
    folder = run.path / TRACKING
    if name == "tensorboard":
        from lal_core.trackers.tensorboard import TensorBoardTracker

        return TensorBoardTracker(folder / "tensorboard" / job)
    if name == "wandb":
        from lal_core.trackers.wandb import WandbTracker

        return WandbTracker(folder, run.run_id, job)
    raise LalError(f"unknown tracker {name!r}; one of: {', '.join(TRACKERS)}")


def run_config(run: RunDir, job: str, started: ev.RunStarted) -> dict[str, Any]:
    """What the run is, from its run.json: model, recipe, backend, data (and SFT's settings)."""
    record = run.read()
    config: dict[str, Any] = {
        "run_id": run.run_id,
        "job": job,
        "backend": record.backend,
        "device": record.device,
        "world_size": record.world_size,
        "n_params": record.n_params or started.n_params,
        "model": record.model_config.to_dict(),
    }
    if record.train_config is not None:
        config["recipe"] = record.train_config.to_dict()
    if record.data is not None:
        config["data"] = write_fields(record.data)
    if job == "sft" and record.sft is not None:
        sft = record.sft
        config["sft"] = {k: getattr(sft, k) for k in ("epochs", "batch_size", "lr", "seed")}
        config["sft"].update(pairs=sft.pairs, n_pairs=sft.n_pairs, examples=sft.examples)
    return config


@dataclass
class Sent:
    """What `send` gave a tracker."""

    steps: int = 0
    evals: int = 0
    status: str = "empty"  # how the run ended, as its log says ("empty": no run in it)
    line: str = ""


@dataclass
class _Forward:
    """Each event of a log as the tracker's calls."""

    run: RunDir
    job: str
    tracker: Tracker
    sent: Sent = field(default_factory=Sent)
    step: int = 0  # the iteration the latest events belong to
    started: bool = False

    def __call__(self, event: ev.Event, t: float) -> None:
        tracker = self.tracker
        if isinstance(event, ev.RunStarted) and not self.started:  # a resume starts again
            tracker.start(run_config(self.run, self.job, event), t)
            self.started = True
        elif isinstance(event, ev.StepDone):
            self.step, self.sent.steps = event.iteration, self.sent.steps + 1
            values = {"train/loss": event.loss, "train/lr": event.lr}
            values["train/tokens_per_sec"] = event.tokens_per_sec
            if event.mfu is not None:
                values["train/mfu"] = event.mfu
            tracker.scalars(event.iteration, values, t)
        elif isinstance(event, ev.EvalDone):
            self.step, self.sent.evals = event.iteration, self.sent.evals + 1
            tracker.scalars(event.iteration, _eval_scalars(event), t)
            tracker.summary({"best_val": event.best_val, "best_iter": event.best_iter})
        elif isinstance(event, ev.SamplesDone) and event.status == "done":
            tracker.samples(event.iteration, list(zip(event.prompts, event.texts, strict=False)), t)
            values = _figures("writing", event.figures) | _figures("held_out", event.held_out)
            if values:
                tracker.scalars(event.iteration, values, t)
        elif isinstance(event, ev.SFTEpochDone):
            self.sent.evals += 1
            values = {"sft/masked_loss": event.masked_loss, "sft/epoch": float(event.epoch)}
            tracker.scalars(self.step, values, t)
        elif isinstance(event, ev.EarlyStopped):
            tracker.summary({"early_stop_iter": event.iteration})
        elif isinstance(event, (ev.RunFinished, ev.RunFailed)):
            self._ended(event)

    def _ended(self, event: ev.RunFinished | ev.RunFailed) -> None:
        if isinstance(event, ev.RunFailed):
            self.sent.status = "failed"
            self.tracker.summary({"status": "failed", "error": event.message})
            return
        self.sent.status = event.status
        ended = {"status": event.status, "iteration": event.iteration, "elapsed": event.elapsed}
        if event.best_iter is not None:
            ended.update(best_val=event.best_val, best_iter=event.best_iter)
        self.tracker.summary(ended)


def _eval_scalars(event: ev.EvalDone) -> dict[str, float]:
    values = {
        "eval/train_loss": event.train_loss,
        "eval/val_loss": event.val_loss,
        "eval/best_val": event.best_val,
        "eval/tokens_per_sec": event.tokens_per_sec,
        "eval/seconds": event.eval_seconds,
    }
    if event.val_bpb is not None:
        values["eval/val_bpb"] = event.val_bpb
    if event.mfu is not None:
        values["eval/mfu"] = event.mfu
    return values


def _figures(prefix: str, figures: Figures | None) -> dict[str, float]:
    if figures is None:
        return {}
    values = {name: getattr(figures, name) for name in FIGURES}
    return {f"{prefix}/{k}": float(v) for k, v in values.items() if v is not None}


def send(run: RunDir, job: str, tracker: Tracker, poll: float = POLL_SECONDS) -> Sent:
    """Every event of the run's `job` log to `tracker`; a live run's until it ends."""
    forward = _Forward(run, job, tracker)
    follower = RunFollower(run, job, poll=poll)
    for event in follower.events():
        forward(event, follower.last_time or time.time())
    sent = forward.sent
    if forward.started:
        sent.line = tracker.finish(sent.status)
    return sent


# -- live: one child process per tracker ----------------------------------------------------
class LiveTrackers:
    """The event callback that starts the trackers of a run when it starts (see the module's
    docstring); `report()` after the run: wait a little for them, then say how each went."""

    def __init__(
        self, names: list[str], job: str, command: Callable[[str, RunDir], list[str]] | None = None
    ) -> None:
        self.names, self.job = names, job
        self.command = command or self.track_command
        self.children: list[tuple[str, subprocess.Popen, Path]] = []
        self.problems: list[str] = []

    def __call__(self, event: ev.Event) -> None:
        if not isinstance(event, ev.RunStarted) or self.children:
            return
        for name in self.names:
            try:
                self.children.append(self._start(name, RunDir(event.run_dir)))
            except Exception as exc:  # noqa: BLE001 - a tracker never stops the run
                self.problems.append(f"{name}: not started ({exc}); the run goes on")

    def _start(self, name: str, run: RunDir) -> tuple[str, subprocess.Popen, Path]:
        folder = run.path / TRACKING
        folder.mkdir(exist_ok=True)
        log = folder / f"{name}-{self.job}.log"
        with open(log, "w") as out:
            child = subprocess.Popen(
                self.command(name, run),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C stops the run, which the tracker then sends
            )
        return name, child, log

    def track_command(self, name: str, run: RunDir) -> list[str]:
        """`lal track` of this run's job to tracker `name`, at a low priority."""
        command = [sys.executable, "-m", "lal_core.cli", "track", str(run.path)]
        return command + ["--report-to", name, "--job", self.job, "--nice"]

    def report(self, wait: float = WAIT_SECONDS) -> list[str]:
        """A line per tracker: where its run went, what went wrong, or that it goes on."""
        lines = list(self.problems)
        deadline = time.monotonic() + wait
        for name, child, log in self.children:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                lines.append(f"{name}: still sending (pid {child.pid}); its log: {log}")
                continue
            last = _last_line(log)
            if child.returncode == 0 and last:
                lines.append(last)
            else:
                lines.append(
                    f"{name}: failed ({last or f'exit status {child.returncode}'}); the run "
                    f"folder is whole: send it again with lal track {log.parent.parent} "
                    f"--report-to {name}"
                )
        return lines


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def lower_priority() -> None:
    """A live tracker gives way to the run it follows."""
    with contextlib.suppress(OSError):
        os.nice(10)
