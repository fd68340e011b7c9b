"""The one way the dashboard runs engine work: a job on a thread worker of the app.

A job is a callable `job(post, stop)`: it does blocking engine work, reports progress only by
`post(message)` (thread-safe, never blocks) and checks `stop` every step or token. The runner
gives each group ("train", "sft", "sample", "ask", "corpus", "report", "picture") one worker at
a time and its own StopRequest, posts what the job says to the widget that asked for the work
(`start(group, job, to=pane)`: the message bubbles on to the app from there), turns any
exception into one `EngineError` line, and posts `JobEnded` last, from the job's own thread, so
it arrives after everything the job posted. A new job of a group stops the one before it and
marks its `Ticket` superseded: what the old one still posts is dropped, its JobEnded aside;
that and an EngineError already on their way say they are `stale` to whoever handles them.

No job here trains: runs are processes of their own (`lal_tui.work.launching`), and the "train"
and "sft" jobs only follow them, so stopping a job (quitting, following another run) leaves the
run going.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.app import App
from textual.message import Message
from textual.message_pump import MessagePump
from textual.worker import Worker, WorkerState

from lal_core.errors import describe_failure as describe_error
from lal_core.runs.events import RunFailed, StopRequest
from lal_tui.work.messages import EngineError, EngineEvent, JobEnded, Ticket

Post = Callable[[Message], object]
Job = Callable[[Post, StopRequest], Any]


class JobRunner:
    """Starts, tracks and stops the app's engine jobs."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._workers: dict[str, Worker] = {}
        self._stops: dict[str, StopRequest] = {}
        self._tickets: dict[str, Ticket] = {}

    def start(self, group: str, job: Job, *, to: MessagePump) -> Worker:
        """Run `job` on a new thread worker of `group`, stopping the group's job before it;
        what it posts goes `to` the widget that asked for it."""
        if group in self._stops:
            self._stops[group].set("superseded")
            self._tickets[group].superseded = True
        stop, ticket = StopRequest(), Ticket()
        self._stops[group], self._tickets[group] = stop, ticket
        worker = self.app.run_worker(
            lambda: self._run(group, job, stop, ticket, to),
            name=group,
            group=group,
            thread=True,
            exclusive=True,
            exit_on_error=False,
        )
        self._workers[group] = worker
        return worker

    def _run(self, group: str, job: Job, stop: StopRequest, ticket: Ticket, to: MessagePump) -> Any:
        reported = False  # the engine already said it failed (RunFailed): one message is enough

        def post(message: Message) -> None:
            nonlocal reported
            if ticket.superseded and not isinstance(message, JobEnded):
                return  # a newer job of the group speaks for it now
            if isinstance(message, EngineEvent) and isinstance(message.event, RunFailed):
                reported = True
            to.post_message(message)

        result = None
        try:
            result = job(post, stop)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a notification
            if not reported:
                post(EngineError(group, describe_error(exc), ticket=ticket))
        finally:
            post(JobEnded(group, result, ticket=ticket))
        return result

    def worker(self, group: str) -> Worker | None:
        """The group's latest worker (None before its first job)."""
        return self._workers.get(group)

    def running(self, group: str) -> bool:
        worker = self._workers.get(group)
        return worker is not None and worker.state in (WorkerState.PENDING, WorkerState.RUNNING)

    def stop(self, group: str, reason: str) -> bool:
        """Ask the group's job to stop (sampling: after its token); False if none is running."""
        if not self.running(group):
            return False
        self._stops[group].set(reason)
        return True

    def stop_all(self, reason: str) -> None:
        for stop in self._stops.values():
            stop.set(reason)
