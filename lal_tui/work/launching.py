"""How the dashboard starts runs: each one a process of its own that writes its run folder.

A run started here is an ordinary `lal train` (or `lal sft`) child in a session of its own
(`start_new_session`, stdin closed), with its console output in a log in the run folder
(train.log, sft.log): a closed terminal, a dropped SSH link or the dashboard quitting does not
reach it. The dashboard only follows the folder (`lal_tui.work.following`, with the engine's
`lal_core.runs.follow`) and asks the run to stop through its stop file, as `lal stop` does, so
a run started here and one started anywhere else are the same to it.

`ProcessLauncher` is the real one; the app takes any launcher (`LalApp(settings, launcher=...)`).
`ThreadLauncher` runs the same engine calls on a thread of this process, for tests: no
interpreter to start, and a model config (`micro`) that `lal train` does not know.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from lal_core.cli.flags import request_argv
from lal_core.errors import CheckpointError, LalError, describe_failure
from lal_core.runs.events import StopRequest, event_time
from lal_core.runs.folder import LOG_FILES, RunDir
from lal_core.runs.lock import Owner, remote_host
from lal_core.training.request import RunRequest

TAIL_BYTES = 64 * 1024  # enough of a log's end to hold its last whole line
# A run started here yields the cores to the dashboard when it has a key to answer (on two
# cores its threads would otherwise keep the next frame waiting): bench/tui_latency.py.
RUN_NICENESS = 5


def _tail(path: Path, offset: int = 0) -> bytes:
    """The end of a file (its last TAIL_BYTES at most, from `offset` on); b"" if unreadable."""
    try:
        with open(path, "rb") as f:
            f.seek(max(offset, f.seek(0, os.SEEK_END) - TAIL_BYTES))
            return f.read()
    except OSError:
        return b""


def last_line(path: Path, offset: int = 0) -> str | None:
    """The last non-blank line of a text file from `offset` on (None: none, or no file)."""
    lines = [line.strip() for line in _tail(path, offset).decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    return lines[-1] if lines else None


def last_event_time(path: Path) -> float | None:
    """When the last whole line of an event log was written (its "t"), None if not known."""
    for line in reversed(_tail(path).split(b"\n")[:-1]):  # after the last newline: unfinished
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                with contextlib.suppress(CheckpointError):
                    return event_time(record)
                return None
    return None


class Launch:
    """A run this dashboard started: its folder, its job ("train" or "sft"), and whether what
    runs it is still going."""

    def __init__(self, path: Path, job: str) -> None:
        self.path, self.job = Path(path), job
        self.started = time.time()
        self.log = RunDir(self.path).console_log(job)
        self.log_offset = self.log.stat().st_size if self.log.is_file() else 0  # earlier runs'
        self.interrupted = False

    def running(self) -> bool:
        raise NotImplementedError

    def interrupt(self) -> None:
        """Stop it before it has taken its folder (until then it does not watch the stop file)."""
        raise NotImplementedError

    def session_begun(self) -> bool:
        """Whether it has logged an event yet: a resumed run rewrites its log and a fine-tune
        starts a new one first, so a follower reads the log from then on."""
        t = last_event_time(RunDir(self.path).event_log(self.job))
        return t is not None and t >= self.started

    def failure(self) -> str:
        """Why it ended before logging anything: the last line of its console output."""
        line = last_line(self.log, self.log_offset)
        if line:
            return line.removeprefix("lal: error: ")
        return f"the {self.job} run ended before it started (nothing in {self.log.name})"

    def discard(self) -> None:
        """Once it has ended: remove the folder reserved for a new run if nothing but console
        logs is in it (it ended before it began)."""
        if not self.running():
            discard_reserved(self.path)


class ProcessLaunch(Launch):
    def __init__(self, path: Path, job: str, start: Callable[[], subprocess.Popen]) -> None:
        super().__init__(path, job)
        self.process = start()

    def running(self) -> bool:
        return self.process.poll() is None  # poll() also reaps it once it has exited

    def be_nice(self) -> None:
        """Lower the run's priority before it starts its threads (they inherit it)."""
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, self.process.pid, RUN_NICENESS)

    def interrupt(self) -> None:
        # Before `lal` takes its signals, SIGTERM ends it (nothing written yet); after, its
        # handler makes it a stop after the step (lal_core.cli.console.StopOnSignals).
        self.interrupted = True
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)


class ProcessLauncher:
    """Runs `lal train` / `lal sft` as child processes, each in a session of its own."""

    def __init__(self, popen: Callable[..., subprocess.Popen] = subprocess.Popen) -> None:
        self.popen = popen
        self.children: list[subprocess.Popen] = []  # polled (reaped) by `reap`

    def train(self, request: RunRequest) -> Launch:
        argv = request_argv(request)  # a config `lal train` does not know: one line, first
        run = reserve(request)
        return self._spawn(run, "train", ["train", *argv, "--run-id", run.run_id], discard=True)

    def resume(self, path: Path, runs_dir: Path | None) -> Launch:
        argv = ["train", "--resume", str(path)]
        if runs_dir is not None:
            argv += ["--runs-dir", str(runs_dir)]
        return self._spawn(RunDir(path), "train", argv)

    def fine_tune(self, path: Path, where: RunRequest) -> Launch:
        argv = ["sft", str(path), "--no-compare", "--backend", where.backend]
        if where.device:
            argv += ["--device", where.device]
        return self._spawn(RunDir(path), "sft", argv)

    def _spawn(self, run: RunDir, job: str, args: list[str], discard: bool = False) -> Launch:
        def start() -> subprocess.Popen:
            with open(run.console_log(job), "ab") as log:
                return self.popen(
                    [sys.executable, "-m", "lal_core.cli", *args],
                    start_new_session=True,  # not in the terminal's session: SIGHUP misses it
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )

        try:
            launch = ProcessLaunch(run.path, job, start)
        except OSError as exc:
            if discard:
                discard_reserved(run.path)
            raise LalError(f"could not start lal {args[0]}: {exc.strerror or exc}") from None
        launch.be_nice()
        self.children.append(launch.process)
        return launch

    def reap(self) -> None:
        """Poll the children: one that has exited is reaped, not left a zombie."""
        self.children = [p for p in self.children if p.poll() is None]


def discard_reserved(folder: Path) -> None:
    """Remove a run folder that holds nothing but console logs (reserved, never begun)."""
    with contextlib.suppress(OSError):
        if all(p.name in LOG_FILES.values() for p in folder.iterdir()):
            for p in folder.iterdir():
                p.unlink()
            folder.rmdir()


def reserve(request: RunRequest) -> RunDir:
    """An empty run folder with a fresh id, for a new run's console log (one that cannot be
    made is a one-line error from `RunDir.create`)."""
    return RunDir.create(request.model_config.name, request.backend, request.runs_dir)


class ThreadLaunch(Launch):
    def __init__(self, path: Path, job: str, work: Callable[[StopRequest], object]) -> None:
        super().__init__(path, job)
        self.stop = StopRequest()
        self.thread = threading.Thread(target=self._run, args=(work,), daemon=True, name=job)
        self.thread.start()

    def _run(self, work: Callable[[StopRequest], object]) -> None:
        try:
            work(self.stop)
        except Exception as exc:  # noqa: BLE001 - what `lal` would print, in its log
            with open(self.log, "a") as log:
                log.write(f"lal: error: {describe_failure(exc)}\n")

    def running(self) -> bool:
        return self.thread.is_alive()

    def interrupt(self) -> None:
        self.interrupted = True
        self.stop.set("stopped from the dashboard")


class ThreadLauncher:
    """The same runs on threads of this process (tests): the engine calls `lal` makes."""

    def __init__(self) -> None:
        self.launches: list[ThreadLaunch] = []

    def train(self, request: RunRequest) -> Launch:
        from lal_core.training.train import Trainer

        run = reserve(request)

        def work(stop: StopRequest) -> object:
            return Trainer(request, run_id=run.run_id, stop=stop).run_training()

        return self._start(run.path, "train", work)

    def resume(self, path: Path, runs_dir: Path | None) -> Launch:
        from lal_core.training.train import Trainer

        def work(stop: StopRequest) -> object:
            return Trainer.resume(path, runs_dir=runs_dir, stop=stop).run_training()

        return self._start(path, "train", work)

    def fine_tune(self, path: Path, where: RunRequest) -> Launch:
        from lal_core.sft import run_sft

        def work(stop: StopRequest) -> object:
            return run_sft(
                path,
                backend=where.backend,
                device=where.device,
                runs_root=where.runs_dir,
                stop=stop,
            )

        return self._start(path, "sft", work)

    def _start(self, path: Path, job: str, work: Callable[[StopRequest], object]) -> Launch:
        launch = ThreadLaunch(path, job, work)
        self.launches.append(launch)
        return launch

    def reap(self) -> None:
        self.launches = [launch for launch in self.launches if launch.running()]

    def close(self, timeout: float = 60.0) -> None:
        """Stop every run still going and wait for it (a test's teardown)."""
        for launch in self.launches:
            if launch.running():
                RunDir(launch.path).request_stop("closing the launcher")
                launch.interrupt()
        for launch in self.launches:
            launch.thread.join(timeout)


def cannot_stop(path: Path, launch: Launch | None) -> str | None:
    """Why the run in `path` cannot be stopped from here (None: it can): it is not running, or
    it runs on another host (followed from here, stopped there)."""
    run = RunDir(path)
    return _why_not(run, run.writer(), launch)


def ask_to_stop(path: Path, launch: Launch | None, reason: str) -> str | None:
    """Ask the run writing `path` to stop after its step and save, through its stop file (as
    `lal stop` does), or, for a run started here that has not taken its folder yet (it does not
    watch the file until then), directly. Returns why it cannot be stopped, else None."""
    run = RunDir(path)
    writer = run.writer()
    why = _why_not(run, writer, launch)
    if why is not None:
        return why
    if writer is None and launch is not None:
        launch.interrupt()
    else:
        run.request_stop(reason)
    return None


def _why_not(run: RunDir, writer: Owner | None, launch: Launch | None) -> str | None:
    if writer is None and launch is not None and launch.running():
        return None  # started here, not yet writing: `ask_to_stop` interrupts it
    if writer is not None:
        host = None if writer.here else writer.host
    else:
        try:
            host = remote_host(run.read())
        except LalError:
            host = None
        if host is None:
            return f"run {run.run_id} is not running; nothing to stop"
    if host is not None:
        return f"run {run.run_id} runs on {host}: it can be followed from here, stopped there"
    return None
