"""The one step loop: pre-training (`lal_core.trainer`) and fine-tuning (`lal_core.sft`) both
take their optimisation steps here, on any backend.

    while (status := job.before_step()) is None:   # evals, epoch ends, early stop
        a stop request?    -> "stopped": job.stopped() keeps what a stop keeps
        step = job.next_step()                            # a batch and its learning rate
        loss = backend.train_step(step.x, step.y, step.lr)    (timed)
        loss not finite?   -> "failed": one line (job.failed), and no checkpoint is written
        job.step_done(...), then StepDone
    the job's output checkpoint (pre-training: final; SFT: sft), then job.finish(status)

The loop owns what every kind of training shares: the stop request, the rule for a non-finite
loss (the backend has already refused the update; the loop stops and writes no weights, so
every checkpoint on disk is from before the failure), timing, step events and the checkpoint
writer. A job owns the rest: its batches and learning rates, what happens between steps, its
records and which checkpoints it keeps.
"""

from __future__ import annotations

import contextlib
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lal_core import events as ev
from lal_core.backends import Backend
from lal_core.checkpoint import STATE_FILE, save_state, save_weights
from lal_core.config import TrainConfig
from lal_core.distributed import RankLost
from lal_core.errors import describe_failure
from lal_core.event_log import EventLog
from lal_core.flops import mfu
from lal_core.runs import RunDir

EventCallback = Callable[[ev.Event], None]


@contextlib.contextmanager
def writing(
    run: RunDir,
    job: str,
    stop: ev.StopRequest,
    on_event: EventCallback | None,
    on_failure: Callable[[str], None] | None = None,
) -> Iterator[EventLog]:
    """A session of one writer of a run folder (training or fine-tuning): its lock held (a
    second writer is refused in one line), stop requests taken from its stop file, and every
    event logged, then passed to `on_event`. A failure is said in the log as well (after
    `on_failure(reason)`), so a follower hears why; then it is raised on."""
    with run.lock(job):
        run.stop_path.unlink(missing_ok=True)  # a request for an earlier process
        stop.watch(run.stop_path)
        emit = EventLog(run.event_log(job), then=on_event)
        try:
            yield emit
        except RankLost:
            # Another rank died: this one cannot go on, and the run did not fail. It is left as
            # its last saved state has it, and reads as interrupted once this process is gone.
            raise
        except BaseException as exc:
            message = describe_failure(exc)
            if on_failure is not None:
                on_failure(message)
            emit(ev.RunFailed(message=message, run_dir=run.path))
            raise
        finally:
            emit.close()
            run.stop_path.unlink(missing_ok=True)


def format_elapsed(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


class Clock:
    """Seconds since a run started, earlier sessions of a resumed run included."""

    def __init__(self, before: float = 0.0) -> None:
        self._start = time.perf_counter() - before

    def __call__(self) -> float:
        return time.perf_counter() - self._start


def setup_training(backend: Backend, cfg: TrainConfig, emit: EventCallback) -> None:
    """`backend.setup_training(cfg)`, saying first what it will spend a while on (compiling),
    so the wait is announced before it starts, not after."""
    notice = backend.preparing()
    if notice:
        emit(ev.Preparing(line=notice))
    backend.setup_training(cfg)


def peak_flops(backend: Backend, peak_tflops: float | None) -> float | None:
    """FLOP/s for MFU: the user's --peak-tflops, else the backend's default for its device;
    times the ranks, as the tokens/s it is set against are all the ranks' together."""
    peak = peak_tflops * 1e12 if peak_tflops else backend.peak_flops()
    return peak * backend.ranks.world if peak else peak


def run_started(
    run: RunDir, backend: Backend, kind: str, max_steps: int, header: str, **more: Any
) -> ev.RunStarted:
    """The RunStarted event of a run of `kind` ("train" or "sft") on this backend."""
    return ev.RunStarted(
        run_id=run.run_id,
        run_dir=run.path,
        kind=kind,
        model_config=backend.cfg,
        backend=backend.name,
        device=backend.device,
        n_params=backend.num_parameters(),
        max_steps=max_steps,
        header=header,
        **more,
    )


@dataclass(frozen=True)
class Step:
    """One optimisation step to take: its batch (int64 (B, T), -1 targets ignored) and lr."""

    iteration: int
    x: np.ndarray
    y: np.ndarray
    lr: float


class Checkpoints:
    """Every file of weights a run writes goes through here: written whole or not at all
    (`lal_core.checkpoint`), and announced with a CheckpointSaved event."""

    def __init__(self, run: RunDir, backend: Backend, emit: EventCallback) -> None:
        self.run, self.backend, self.emit = run, backend, emit

    def save(self, kind: str, iteration: int, meta: dict[str, Any] | None = None) -> Path:
        path = self.run.checkpoint(kind)
        save_weights(path, self.backend.state_dict(), self.backend.cfg, meta)
        self.emit(ev.CheckpointSaved(iteration=iteration, kind=kind, path=path))
        return path

    def save_state(self, loop_state: dict[str, Any]) -> None:
        """The resumable state: weights, optimizer and RNG state, and the job's own counters."""
        save_state(
            self.run.path / STATE_FILE,
            self.backend.state_dict(),
            self.backend.optimizer_state(),
            self.backend.cfg,
            loop_state,
        )


class Job(ABC):
    """What one kind of training decides; `run_steps` does the rest."""

    iteration: int = 0  # the next step's number (so far: the steps taken)
    clock: Clock  # the run's elapsed time, set when the job is made
    emit: EventCallback  # where its events go
    run: RunDir | None = None  # the run folder it writes (None: it writes no files)
    checkpoints: Checkpoints | None = None  # the writer of its weights, with a run folder
    peak: float | None = None  # the device's peak FLOP/s, for the MFU figure

    @abstractmethod
    def before_step(self) -> str | None:
        """Whatever is due before the next step (an eval, an epoch's end). Returns the run's
        status when it is over ("completed", "early_stopped"), None to take the step."""

    @abstractmethod
    def next_step(self) -> Step:
        """The next batch and its learning rate."""

    @abstractmethod
    def step_done(self, step: Step, loss: float, seconds: float) -> None:
        """Record a step that went well."""

    @abstractmethod
    def stopped(self) -> None:
        """A stop request ended the run before the next step: keep what it learned so far."""

    @abstractmethod
    def failed(self, step: Step, loss: float) -> str:
        """The step's loss or gradient was not finite: the one-line reason, for people."""

    def output(self) -> tuple[str, dict[str, Any]] | None:
        """The checkpoint written when the run ends other than by failing: (kind, metadata)."""
        return None

    @abstractmethod
    def finish(self, status: str, message: str = "") -> None:
        """The run is over (completed, early stopped, stopped or failed, with `failed`'s
        `message`): records and events."""


@dataclass(frozen=True)
class LoopEnd:
    status: str  # "completed", "early_stopped", "stopped" or "failed"
    elapsed: float
    message: str = ""  # why it failed
    output: Path | None = None  # the output checkpoint, if one was written


def run_steps(backend: Backend, job: Job, stop: ev.StopRequest) -> LoopEnd:
    """Take the job's steps until it is over, a stop is requested or a loss is not finite."""
    elapsed = job.clock
    while (status := job.before_step()) is None:
        if stop.is_set():
            status = "stopped"
            job.stopped()
            break
        step = job.next_step()
        t0 = time.perf_counter()
        loss = backend.train_step(step.x, step.y, step.lr)
        seconds = time.perf_counter() - t0
        if not math.isfinite(loss):
            message = job.failed(step, loss)
            job.finish("failed", message)
            run_dir = job.run.path if job.run is not None else None
            job.emit(ev.RunFailed(message=message, run_dir=run_dir, iteration=step.iteration))
            return LoopEnd("failed", elapsed(), message)
        job.step_done(step, loss, seconds)
        tok_s = step.x.size / seconds if seconds > 0 else 0.0
        job.emit(
            ev.StepDone(
                iteration=step.iteration,
                loss=loss,
                lr=step.lr,
                tokens_per_sec=tok_s,
                elapsed=elapsed(),
                mfu=mfu(tok_s, backend.cfg, job.peak),
            )
        )
    output = job.output()
    path = None
    if output is not None and job.checkpoints is not None:
        path = job.checkpoints.save(output[0], job.iteration, output[1])
    job.finish(status)
    return LoopEnd(status, elapsed(), output=path)
