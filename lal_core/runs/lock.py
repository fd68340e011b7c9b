"""One writer per run folder: a lock the operating system drops when its process dies.

Every process that writes a run folder (training, a resume, fine-tuning, anything later that
stores results there) holds an exclusive `flock` on the folder's `.lock` file while it writes,
and says in that file who it is: pid, host, when it started and which job. A second writer is
refused in one line naming the first; after `kill -9` (or a power cut) the lock is simply gone,
so nothing stale is left to clean up. Readers use the same lock to tell a live run from an
interrupted one: a run whose lock nobody holds has no process behind it (`writer_of`,
`live_status`; a run from before locks is taken at its run.json's word, if its process lives).

`flock` is per open file, so a reader in the writer's own process sees the lock as held too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from lal_core.errors import CheckpointError
from lal_core.runs.records import RunRecord

LOCK_FILE = ".lock"
ATTEMPTS = 20  # a reader probing the lock holds it for microseconds: try again a few times
ATTEMPT_GAP = 0.025


@dataclass(frozen=True)
class Owner:
    """The process writing a run folder."""

    pid: int
    host: str
    started: float  # when it took the folder (time.time())
    job: str  # "train" or "sft"

    def describe(self) -> str:
        since = datetime.fromtimestamp(self.started).strftime("%Y-%m-%d %H:%M:%S")
        what = {"train": "training", "sft": "fine-tuning", "report": "a report"}.get(
            self.job, self.job
        )
        return f"{what} (pid {self.pid} on {self.host}, since {since})"

    @property
    def here(self) -> bool:
        """Whether it runs on this machine (and so can be signalled and probed from here)."""
        return self.host == socket.gethostname()


class RunBusy(CheckpointError):
    """The run folder has a live writer already."""


def _read_owner(fd: int) -> Owner | None:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return Owner(int(data["pid"]), str(data["host"]), float(data["started"]), data["job"])
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None  # written a moment ago and not yet whole, or damaged


class RunLock:
    """The writer's lock on one run folder; `with RunLock(folder, "train"):` holds it."""

    def __init__(self, folder: Path, job: str) -> None:
        self.path = Path(folder) / LOCK_FILE
        self.job = job
        self._fd: int | None = None

    def acquire(self) -> Owner:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        for attempt in range(ATTEMPTS):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == ATTEMPTS - 1:
                    owner = _read_owner(fd)
                    os.close(fd)
                    who = owner.describe() if owner else "another process"
                    raise RunBusy(
                        f"run {self.path.parent.name} is being written by {who}; "
                        f"wait for it, or stop it first: lal stop {self.path.parent.name}"
                    ) from None
                time.sleep(ATTEMPT_GAP)
        owner = Owner(os.getpid(), socket.gethostname(), time.time(), self.job)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(owner)).encode(), 0)
        self._fd = fd
        return owner

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)  # readers of an unheld lock see nobody
            os.close(self._fd)  # drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def current_owner(folder: Path) -> Owner | None:
    """The live writer of `folder` as this machine sees it, or None when no process holds its
    lock (or it has none: a run from before locks, see `runs.RunDir.writer`)."""
    try:
        fd = os.open(Path(folder) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_owner(fd) or Owner(-1, "?", 0.0, "?")  # held: someone writes
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def has_lock_file(folder: Path) -> bool:
    return (Path(folder) / LOCK_FILE).exists()


def writer_of(folder: Path, record: RunRecord | None = None) -> Owner | None:
    """The process writing `folder` now, if this machine can see one: the holder of its lock,
    or for a run from before locks, the owner its run.json (`record`) names, if that process
    lives."""
    owner = current_owner(folder)
    if owner is not None or has_lock_file(folder) or record is None:
        return owner
    process = record.process
    if record.status != "running" or process is None or process.host != socket.gethostname():
        return None
    if not _alive(process.pid):
        return None
    return Owner(process.pid, process.host, process.started or 0.0, "train")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True


def remote_host(record: RunRecord) -> str | None:
    """The host run.json says writes the run, when that is not this machine (None: not
    running, or here). Such a run is taken at its word: its lock and process cannot be seen
    from here, so it can be followed but not stopped or probed."""
    process = record.process
    if record.status != "running" or process is None or process.host == socket.gethostname():
        return None
    return process.host


def live_status(record: RunRecord, writer: Owner | None) -> str:
    """The status a run really has, given its `writer` (`writer_of`): `interrupted` when
    run.json says `running` but nothing on this host writes it any more (killed, or the
    machine went down). A run owned by another host is taken at its word."""
    if record.status != "running" or remote_host(record) is not None:
        return record.status
    return "running" if writer is not None and writer.job == "train" else "interrupted"
