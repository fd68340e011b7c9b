"""The runs the Train and SFT panes follow: a run folder each, and how it was started.

A pane follows a run folder through a job of its group ("train" or "sft") that only reads the
folder (`following`, with the engine's `lal_core.runs.follow.RunFollower`) and posts its events
to that pane. The run was started here (its `Launch`, from the app's launcher: a child process,
or a thread in tests), by `lal train` elsewhere, or before the dashboard opened: following,
stopping and quitting treat them all the same. What the panes show is theirs; this only
starts, follows and stops.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from textual.message_pump import MessagePump

from lal_core.errors import LalError
from lal_core.runs.events import RunFailed, RunFinished, StopRequest
from lal_core.runs.folder import RunDir
from lal_core.runs.follow import POLL_SECONDS, RunFollower
from lal_core.training.request import RunRequest
from lal_tui.work.jobs import Job, JobRunner, Post
from lal_tui.work.launching import Launch, ask_to_stop, cannot_stop
from lal_tui.work.messages import SFTEvent, TrainEvent

RUN_JOBS = ("train", "sft")  # the job groups that follow a run


class Launcher(Protocol):
    """What starts runs: `launching.ProcessLauncher` (child processes) or `ThreadLauncher`."""

    def train(self, request: RunRequest) -> Launch: ...

    def resume(self, path: Path, runs_dir: Path | None) -> Launch: ...

    def fine_tune(self, path: Path, where: RunRequest) -> Launch: ...

    def reap(self) -> None: ...


class FollowedRuns:
    def __init__(self, jobs: JobRunner, launcher: Launcher) -> None:
        self.jobs, self.launcher = jobs, launcher
        self.paths: dict[str, Path] = {}  # per group: the run folder followed (or last followed)
        self.launches: dict[str, Launch | None] = {}  # ... and its launch, when started here

    def start(self, group: str, start: Callable[[Launcher], Launch], *, to: MessagePump) -> None:
        """Start a run with the launcher (`start(launcher)`) and follow it; raises LalError."""
        launch = start(self.launcher)
        self.follow(group, launch.path, launch, to=to)

    def follow(
        self, group: str, path: Path, launch: Launch | None = None, *, to: MessagePump
    ) -> None:
        """Follow the run in `path`, its events posted `to` the group's pane (the run followed
        before goes on, unfollowed)."""
        self.paths[group], self.launches[group] = Path(path), launch
        self.jobs.start(group, following(Path(path), group, launch), to=to)

    def follows(self, group: str, path: Path) -> bool:
        """Whether the group follows the live run in `path` now."""
        return self.jobs.running(group) and self.paths.get(group) == Path(path)

    def stop(self, group: str, reason: str) -> str | None:
        """Ask the followed run to stop after its step; why it cannot be, else None."""
        return ask_to_stop(self.paths[group], self.launches.get(group), reason)

    def stoppable(self) -> list[str]:
        """The groups that follow a live run this dashboard can stop."""
        return [
            g
            for g in RUN_JOBS
            if self.jobs.running(g) and cannot_stop(self.paths[g], self.launches.get(g)) is None
        ]


def following(path: Path, job: str = "train", launch: Launch | None = None) -> Job:
    """Follow one job's log ("train" or "sft") in a run folder: its events, past and live, as
    TrainEvent or SFTEvent, until the run ends (or the job is stopped: the run goes on).
    `launch`: the run was started here; its log is read once it has begun to write it, and
    if it ends without a word, the last line of its console output is the error."""
    wrap = TrainEvent if job == "train" else SFTEvent

    def follow(post: Post, stop: StopRequest):
        if launch is not None and not wait_for_session(launch, stop):
            if launch.running():
                return None  # no longer followed before it began: it goes on
            failure = None if launch.interrupted else launch.failure()
            launch.discard()
            if failure is not None:
                raise LalError(failure)
            return None
        starting = launch.running if launch is not None else None
        run = RunDir(path)
        follower = RunFollower(run, job, starting=starting)
        seen, ended = 0, None
        for event in follower.events(stop=stop):
            seen, ended = seen + 1, event
            post(wrap(event))
        if stop.is_set():
            return None  # no longer followed: the run goes on
        if not seen:
            what = "training" if job == "train" else "fine-tuning"
            raise LalError(
                f"run {path.name} has no {what} events logged (a run from an older lal?)"
            )
        return ended if isinstance(ended, RunFinished | RunFailed) else None

    return follow


def wait_for_session(launch: Launch, stop: StopRequest) -> bool:
    """Wait until the launched run logs its first event (True), or ends or `stop` is set first."""
    while not launch.session_begun():
        if not launch.running():
            return launch.session_begun()
        if stop.is_set():
            return False
        time.sleep(POLL_SECONDS)
    return True
