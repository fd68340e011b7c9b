"""The one way the dashboard runs engine work: a job on a thread worker of the app.

A job is a callable `job(post, stop)`: it does blocking engine work, reports progress only by
`post(message)` (thread-safe, never blocks) and checks `stop` every step or token. The runner
gives each group ("train", "sft", "sample", "ask", "corpus") one worker at a time and its own
StopRequest, turns any exception into one `EngineError` line, and posts `JobEnded` last, from
the job's own thread, so it arrives after everything the job posted. A new job of a group stops
the one before it; what the old one still posts is dropped (its JobEnded aside, which the app
tells apart with `is_current`).

No job here trains: runs are processes of their own (`lal_tui.launcher`), and the "train" and
"sft" jobs only follow them, so stopping a job (quitting, following another run) leaves the
run going.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.app import App
from textual.message import Message
from textual.worker import Worker, WorkerState, get_current_worker

from lal_core.errors import describe_failure as describe_error
from lal_core.runs.events import RunFailed, StopRequest
from lal_tui.messages import EngineError, EngineEvent, JobEnded

Post = Callable[[Message], object]
Job = Callable[[Post, StopRequest], Any]


class JobRunner:
    """Starts, tracks and stops the app's engine jobs."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._workers: dict[str, Worker] = {}
        self._stops: dict[str, StopRequest] = {}

    def start(self, group: str, job: Job) -> Worker:
        """Run `job` on a new thread worker of `group`, stopping the group's job before it."""
        if group in self._stops:
            self._stops[group].set("superseded")
        stop = StopRequest()
        self._stops[group] = stop
        worker = self.app.run_worker(
            lambda: self._run(group, job, stop),
            name=group,
            group=group,
            thread=True,
            exclusive=True,
            exit_on_error=False,
        )
        self._workers[group] = worker
        return worker

    def _run(self, group: str, job: Job, stop: StopRequest) -> Any:
        worker = get_current_worker()
        reported = False  # the engine already said it failed (RunFailed): one message is enough

        def post(message: Message) -> None:
            nonlocal reported
            if not (isinstance(message, JobEnded) or self.is_current(worker)):
                return  # superseded: a newer job of the group speaks for it now
            if isinstance(message, EngineEvent) and isinstance(message.event, RunFailed):
                reported = True
            self.app.post_message(message)

        result = None
        try:
            result = job(post, stop)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a notification
            if not reported:
                post(EngineError(group, describe_error(exc), worker))
        finally:
            post(JobEnded(group, result, worker))
        return result

    def worker(self, group: str) -> Worker | None:
        """The group's latest worker (None before its first job)."""
        return self._workers.get(group)

    def is_current(self, worker: Worker | None) -> bool:
        """Whether `worker` is its group's latest: what an older job posts late is stale."""
        return worker is None or self._workers.get(worker.group) is worker

    def running(self, group: str) -> bool:
        worker = self._workers.get(group)
        return worker is not None and worker.state in (WorkerState.PENDING, WorkerState.RUNNING)

    def stopping(self, group: str) -> bool:
        """Whether the group's job has been asked to stop: what it posted before it saw the
        request may still arrive, and is stale."""
        return group in self._stops and self._stops[group].is_set()

    def stop(self, group: str, reason: str) -> bool:
        """Ask the group's job to stop (sampling: after its token); False if none is running."""
        if not self.running(group):
            return False
        self._stops[group].set(reason)
        return True

    def stop_all(self, reason: str) -> None:
        for stop in self._stops.values():
            stop.set(reason)
