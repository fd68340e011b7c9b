"""The runs the Train and SFT panes follow: a run folder each, and how it was started.

A pane follows a run folder through a job of its group ("train" or "sft") that only reads the
folder (`engine_jobs.following`). The run was started here (its `Launch`, from the app's
launcher: a child process, or a thread in tests), by `lal train` elsewhere, or before the
dashboard opened: following, stopping and quitting treat them all the same. What the panes
show is the app's business; this only starts, follows and stops.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from lal_core.training.request import RunRequest
from lal_tui import engine_jobs
from lal_tui.jobs import JobRunner
from lal_tui.launcher import Launch, ask_to_stop, cannot_stop

RUN_JOBS = ("train", "sft")  # the job groups that follow a run


class Launcher(Protocol):
    """What starts runs: `launcher.ProcessLauncher` (child processes) or `ThreadLauncher`."""

    def train(self, request: RunRequest) -> Launch: ...

    def resume(self, path: Path, runs_dir: Path | None) -> Launch: ...

    def fine_tune(self, path: Path, where: RunRequest) -> Launch: ...

    def reap(self) -> None: ...


class FollowedRuns:
    def __init__(self, jobs: JobRunner, launcher: Launcher) -> None:
        self.jobs, self.launcher = jobs, launcher
        self.paths: dict[str, Path] = {}  # per group: the run folder followed (or last followed)
        self.launches: dict[str, Launch | None] = {}  # ... and its launch, when started here

    def start(self, group: str, start: Callable[[Launcher], Launch]) -> None:
        """Start a run with the launcher (`start(launcher)`) and follow it; raises LalError."""
        launch = start(self.launcher)
        self.follow(group, launch.path, launch)

    def follow(self, group: str, path: Path, launch: Launch | None = None) -> None:
        """Follow the run in `path` (the one followed before goes on, unfollowed)."""
        self.paths[group], self.launches[group] = Path(path), launch
        self.jobs.start(group, engine_jobs.following(Path(path), group, launch))

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
