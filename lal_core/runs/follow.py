"""Follow a run folder as it grows: the events its writer logs, as they come.

    follower = RunFollower(RunDir(path))
    for event in follower.events():   # a live run: until it ends; a finished one: its history
        ...

A run is its folder and at most one process writing it (`lal_core.runs.lock`); any number of
followers (the dashboard, `lal watch`, a second dashboard, a script) read its event log
(`lal_core.runs.events`) from the start, then poll it for new lines, and yield the same typed
events the engine emitted, in the same order. A line still being written waits for its end.
When nothing writes the run any more and its last session did not say how it ended (the
process was killed), the follower says it: a RunFinished with status "interrupted".
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from lal_core.errors import CheckpointError, LalError
from lal_core.runs import events as ev
from lal_core.runs.events import event_from_json, event_time
from lal_core.runs.folder import RunDir, RunEntry, find_run, list_runs
from lal_core.runs.lock import remote_host

POLL_SECONDS = 0.1
START_GRACE_SECONDS = 2.0  # a folder made a moment ago may not have its writer's lock yet


class RunFollower:
    """One follower of one job's log ("train" or "sft") in a run folder."""

    def __init__(
        self,
        run: RunDir,
        job: str = "train",
        poll: float = POLL_SECONDS,
        starting: Callable[[], bool] | None = None,
    ) -> None:
        self.run, self.job, self.poll = run, job, poll
        # Until the writer has taken the folder, whether it is still on its way (the dashboard
        # passes "its child process has not exited").
        self.starting = starting
        self.last_time: float | None = None  # when the writer logged the last event yielded
        self.ended: ev.RunFinished | ev.RunFailed | None = None  # how the last session ended
        self._open = False  # a session started and not yet ended
        self._last: dict[str, float | int | None] = {}

    def writing(self) -> bool:
        """Whether a process writes this job's log, as far as this machine can tell."""
        writer = self.run.writer()
        if writer is not None:
            return writer.job == self.job
        if self.starting is not None and self.starting():
            return True
        if self.job != "train":
            return False
        try:  # a run owned by another host is taken at its word
            return remote_host(self.run.read()) is not None
        except CheckpointError:
            return False

    def events(self, stop: ev.StopRequest | None = None) -> Iterator[ev.Event]:
        """The log's events, then new ones as they are written, until the run ends (or `stop`
        is set). A finished run's history comes at once."""
        path, offset, partial = self.run.event_log(self.job), 0, b""
        grace = time.monotonic() + START_GRACE_SECONDS
        while stop is None or not stop.is_set():
            valid = _still_valid(path, offset)
            offset, partial = valid, partial if valid == offset else b""
            chunk = _read_from(path, offset)
            if not chunk:
                if not self.writing() and (offset or time.monotonic() > grace):
                    break
                time.sleep(self.poll)
                continue
            offset += len(chunk)
            *lines, partial = (partial + chunk).split(b"\n")
            for event in self._parse(lines):
                yield event
                if stop is not None and stop.is_set():
                    return
        else:
            return
        # Nothing writes it now: what it wrote is all there. Read once more, then say so.
        *lines, _cut = (partial + _read_from(path, offset)).split(b"\n")
        yield from self._parse(lines)
        if self._open:
            yield self._interrupted()

    def _parse(self, lines: list[bytes]) -> Iterator[ev.Event]:
        for line in lines:
            try:
                data = json.loads(line)
            except ValueError:
                continue
            event = event_from_json(data, self.run.path)
            if event is None:
                continue
            self.last_time = event_time(data)
            self._track(event)
            yield event

    def _track(self, event: ev.Event) -> None:
        if isinstance(event, (ev.Preparing, ev.RunStarted)):
            self._open, self.ended = True, None
        elif isinstance(event, (ev.RunFinished, ev.RunFailed)):
            self._open, self.ended = False, event
        if isinstance(event, (ev.StepDone, ev.EvalDone)):
            self._last.update(iteration=event.iteration + 1, elapsed=event.elapsed)
        if isinstance(event, ev.EvalDone):
            self._last.update(iteration=event.iteration, best=event.best_val, at=event.best_iter)

    def _interrupted(self) -> ev.RunFinished:
        it = int(self._last.get("iteration") or 0)
        again = f"lal train --resume {self.run.run_id}"
        if self.job == "sft":
            again = f"lal sft {self.run.run_id}"
        finished = ev.RunFinished(
            status="interrupted",
            iteration=it,
            best_val=self._last.get("best"),
            best_iter=self._last.get("at"),
            run_dir=self.run.path,
            elapsed=float(self._last.get("elapsed") or 0.0),
            line=f"interrupted near iter {it}: the process writing it is gone; again with: {again}",
        )
        self._open, self.ended = False, finished
        return finished


def _still_valid(path: Path, offset: int) -> int:
    """Where to read on from: a resume rewrites the log with the lines it keeps first, as they
    were, so a position past the file's new end moves back to that end."""
    try:
        return min(offset, path.stat().st_size)
    except FileNotFoundError:
        return 0


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""


def live_runs(root: Path | None = None) -> list[RunEntry]:
    """The runs some process writes now (training or fine-tuning), oldest first."""
    return [r for r in list_runs(root) if r.writer is not None or r.status == "running"]


def live_run(ref: str | None, root: Path | None = None) -> RunDir:
    """The run `ref` names, or (None) the newest live one; a one-line LalError if none."""
    if ref:
        return find_run(ref, root)
    live = live_runs(root)
    if not live:
        raise LalError("no run is being written now; name one (see: lal runs)")
    return RunDir(live[-1].path)


def describe(event: ev.Event) -> str | None:
    """The line `lal train`, `lal sft` and `lal watch` print for an event (None: a step, shown
    in place on a terminal, or a checkpoint)."""
    if isinstance(
        event, (ev.Preparing, ev.EvalDone, ev.EarlyStopped, ev.SFTEpochDone, ev.RunFinished)
    ):
        return event.line
    if isinstance(event, ev.RunStarted):
        return event.header
    if isinstance(event, ev.RunFailed):
        return f"failed: {event.message}"
    return None
