"""Run folders: `checkpoints/<run-id>/` with run.json, metrics.jsonl and the checkpoints.

    best.safetensors   the weights at the lowest val loss so far
    final.safetensors  the weights when the run ended (early stop, max iters or a stop request)
    run.json           model and training config, backend, device, data, iteration, best val,
                       status (running, completed, early_stopped, stopped, failed)
    metrics.jsonl      one JSON object per step and per eval

A run whose run.json still says `running` but whose process is gone shows as `interrupted`; one
whose run.json cannot be read is listed as `damaged`, with the reason. The files' layouts are
typed in `lal_core.runs.records`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from lal_core.errors import CheckpointError, LalError, RankLost, describe_failure
from lal_core.runs.checkpoints import STATE_FILE, read_state_header
from lal_core.runs.events import EventCallback, EventLog, RunFailed, StopRequest, cut_log
from lal_core.runs.files import read_json, write_json
from lal_core.runs.lock import (
    Owner,
    RunBusy,
    RunLock,
    has_lock_file,
    live_status,
    writer_of,
)
from lal_core.runs.records import (
    FORMAT_VERSION,
    EvalRecord,
    MetricRecord,
    ProcessInfo,
    ResumeMark,
    RunRecord,
    SamplesRecord,
    StepRecord,
    read_metrics,
)

CHECKPOINT_KINDS = ("best", "final", "sft")
EVENT_LOGS = {"train": "metrics.jsonl", "sft": "sft_metrics.jsonl"}
LOG_FILES = {"train": "train.log", "sft": "sft.log"}  # console output of a dashboard's run
STOP_FILE = "stop.request"


def new_run_id(config_name: str, backend: str, root: Path) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{config_name}-{backend}"
    run_id, n = base, 1
    while (root / run_id).exists():
        n += 1
        run_id = f"{base}-{n}"
    return run_id


class RunDir:
    """One run's folder; every file in it is written atomically, except the append-only metrics."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(
        cls, config_name: str, backend: str, root: Path | None = None, run_id: str | None = None
    ) -> RunDir:
        """A new run folder: a fresh id, or `run_id` (a folder that holds nothing but logs yet:
        the dashboard names the folder first, to send the run's console output there)."""
        root = runs_root(root)
        if run_id is not None and (Path(run_id).name != run_id or run_id in ("", ".", "..")):
            raise CheckpointError(f"--run-id must be a plain folder name, got {run_id!r}")
        try:
            root.mkdir(parents=True, exist_ok=True)
            folder = root / (run_id or new_run_id(config_name, backend, root))
            folder.mkdir(exist_ok=True)
            taken = any(p.name not in LOG_FILES.values() for p in folder.iterdir())
        except OSError as exc:  # a read-only or full disk, a file where the folder goes
            where = f" ({exc.filename})" if exc.filename else ""
            reason = f"{exc.strerror or exc}{where}"
            raise CheckpointError(f"cannot create the run folder: {reason}") from None
        if taken:
            raise CheckpointError(f"{folder} already holds a run; choose another --run-id")
        return cls(folder)

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / EVENT_LOGS["train"]

    def event_log(self, job: str = "train") -> Path:
        """Where the events of a job ("train" or "sft") are logged, a line each."""
        return self.path / EVENT_LOGS[job]

    def console_log(self, job: str = "train") -> Path:
        """Where a run started by the dashboard sends its console output."""
        return self.path / LOG_FILES[job]

    @property
    def stop_path(self) -> Path:
        return self.path / STOP_FILE

    def lock(self, job: str) -> RunLock:
        """The writer's lock: hold it while writing this folder (`with run.lock("train"):`)."""
        return RunLock(self.path, job)

    @contextlib.contextmanager
    def writing(
        self, job: str, stop: StopRequest, on_event: EventCallback | None = None
    ) -> Iterator[EventLog]:
        """A session of the folder's one writer (training or fine-tuning): its lock held (a
        second writer is refused in one line), stop requests taken from its stop file, and
        every event logged, then passed to `on_event`. A failure is said in the log as well (a
        training's also in run.json), so a follower hears why; then it is raised on."""
        with self.lock(job):
            self.stop_path.unlink(missing_ok=True)  # a request for an earlier process
            stop.watch(self.stop_path)
            emit = EventLog(self.event_log(job), then=on_event)
            try:
                yield emit
            except RankLost:
                # Another rank died: this one cannot go on, and the run did not fail. It is left
                # as its last saved state has it, and reads as interrupted once this is gone.
                raise
            except BaseException as exc:
                message = describe_failure(exc)
                if job == "train" and self.run_json.is_file():
                    self.update(status="failed", error=message)
                emit(RunFailed(message=message, run_dir=self.path))
                raise
            finally:
                emit.close()
                self.stop_path.unlink(missing_ok=True)

    def writer(self, record: RunRecord | None = None) -> Owner | None:
        """The process writing this folder now, if this machine can see one: the holder of its
        lock, or for a run from before locks, run.json's owner if that process lives (`record`:
        run.json as the caller has already read it)."""
        if record is None and not has_lock_file(self.path):
            with contextlib.suppress(CheckpointError):
                record = self.read()
        return writer_of(self.path, record)

    def request_stop(self, reason: str) -> None:
        """Ask the run's writer to stop after its step (it watches for this file, and removes
        it when it stops)."""
        write_json(self.stop_path, {"reason": reason, "time": time.time(), "pid": os.getpid()})

    def checkpoint(self, kind: str) -> Path:
        if kind not in CHECKPOINT_KINDS:
            raise CheckpointError(
                f"unknown checkpoint {kind!r}; choose one of: {', '.join(CHECKPOINT_KINDS)}"
            )
        return self.path / f"{kind}.safetensors"

    def existing_checkpoint(self, kind: str) -> Path:
        """The checkpoint file of this kind, which must exist (else a one-line error)."""
        path = self.checkpoint(kind)
        if not path.is_file():
            hint = f"; run first: lal sft {self.run_id}" if kind == "sft" else ""
            raise CheckpointError(f"run {self.run_id} has no {kind} checkpoint ({path.name}){hint}")
        return path

    def read(self) -> RunRecord:
        """run.json, checked; a missing, damaged or newer-format file is a one-line error."""
        if not self.run_json.is_file():
            raise CheckpointError(f"{self.path} is not a run folder (no run.json)")
        data = read_json(self.run_json)  # its errors name the file
        try:
            return RunRecord.from_json(data, self.run_id)
        except CheckpointError as exc:
            raise CheckpointError(f"{self.run_json}: {exc}") from None

    def write(self, record: RunRecord) -> None:
        write_json(self.run_json, record.to_json())

    def update(self, record: RunRecord | None = None, /, **changes: Any) -> RunRecord:
        """Rewrite run.json with these fields changed (and `updated` set to now); `record`:
        run.json as the caller has just read it."""
        record = replace(
            record or self.read(), **changes, updated=time.time(), format_version=FORMAT_VERSION
        )
        self.write(record)
        return record

    def begin_again(self, iteration: int, evaluated: bool, **changes: Any) -> RunRecord:
        """Mark a stopped run running again from its saved state at `iteration`: its log cut
        back to that point, temp files of a killed process gone, and run.json updated (these
        `changes`, this process as its owner, the resume point added to `resumed`)."""
        cut_log(self.metrics_path, iteration, evaluated)
        self.remove_temp_files()
        record = self.read()
        mark = ResumeMark(iteration=iteration, time=time.time())
        return self.update(
            record,
            status="running",
            process=process_info(),
            resumed=(*record.resumed, mark),
            error=None,
            **changes,
        )

    def remove_temp_files(self) -> None:
        """Temp files left by a process killed mid-write: atomic_write's, and safetensors'."""
        for stale in (*self.path.glob(".*.tmp"), *self.path.glob(".tmp*")):
            stale.unlink(missing_ok=True)

    def read_metrics(self) -> list[MetricRecord]:
        """Every complete step and eval record of metrics.jsonl."""
        return read_metrics(self.metrics_path)

    def curves(self) -> tuple[list[StepRecord], list[EvalRecord]]:
        """The step and the eval records, from one read of metrics.jsonl."""
        records = self.read_metrics()
        steps = [r for r in records if isinstance(r, StepRecord)]
        return steps, [r for r in records if isinstance(r, EvalRecord)]

    def steps(self) -> list[StepRecord]:
        return self.curves()[0]

    def evals(self) -> list[EvalRecord]:
        return self.curves()[1]

    def eval_samples(self) -> list[SamplesRecord]:
        """The samples drawn after each eval, whole, with their writing figures."""
        return [r for r in self.read_metrics() if isinstance(r, SamplesRecord)]


def process_info() -> ProcessInfo:
    return ProcessInfo(pid=os.getpid(), host=socket.gethostname(), started=time.time())


def runs_root(root: Path | str | None = None) -> Path:
    """The folder runs live in: `root`, else $LAL_RUNS, else checkpoints/ under LAL_HOME (default:
    the current directory, the repo root under `uv run`)."""
    if root is not None:
        return Path(root)
    home = Path(os.environ.get("LAL_HOME") or Path.cwd())
    return Path(os.environ.get("LAL_RUNS") or home / "checkpoints")


@dataclass(frozen=True)
class RunEntry:
    """A run folder as `lal runs` and the dashboard list it: its record and its live status,
    or, for a folder whose run.json cannot be read, status "damaged" and the reason."""

    path: Path
    record: RunRecord | None
    status: str
    error: str | None = None
    writer: Owner | None = None  # the process writing it now (training or fine-tuning)

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def damaged(self) -> bool:
        return self.record is None

    @property
    def config(self) -> str:
        return self.record.model_config.name if self.record else "?"

    @property
    def backend(self) -> str:
        return self.record.backend if self.record else "?"

    @property
    def device(self) -> str:
        return self.record.device if self.record else "?"

    @property
    def best_val(self) -> float | None:
        return self.record.best_val if self.record else None

    @property
    def best_iter(self) -> int | None:
        return self.record.best_iter if self.record else None

    @property
    def iteration(self) -> int:
        return self.record.iteration if self.record else 0

    @property
    def created(self) -> float:
        if self.record is not None and self.record.created:
            return self.record.created
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0

    @property
    def date(self) -> str:
        return datetime.fromtimestamp(self.created).strftime("%Y-%m-%d %H:%M")


def read_entry(run: RunDir) -> RunEntry:
    """The run's entry; a damaged run.json makes a "damaged" entry, not an error."""
    try:
        record = run.read()
    except CheckpointError as exc:
        return RunEntry(run.path, None, "damaged", str(exc))
    writer = writer_of(run.path, record)
    return RunEntry(run.path, record, live_status(record, writer), writer=writer)


def list_runs(root: Path | None = None) -> list[RunEntry]:
    """Every folder under root with a run.json, oldest first; damaged ones included, so they
    can be found and deleted."""
    root = runs_root(root)
    if not root.is_dir():
        return []
    runs = [read_entry(RunDir(f)) for f in root.iterdir() if (f / "run.json").is_file()]
    return sorted(runs, key=lambda r: (r.created, r.run_id))


def find_run(ref: str | Path | RunDir | None, root: Path | None = None) -> RunDir:
    """A run folder from a run id, a path to a folder, or (None) the newest run; a RunDir is
    taken as it is."""
    if isinstance(ref, RunDir):
        return ref
    root = runs_root(root)
    if ref in (None, ""):
        runs = [r for r in list_runs(root) if not r.damaged]
        if not runs:
            raise CheckpointError(
                f"no runs in {root}; train one first with: lal train --config tiny"
            )
        return RunDir(runs[-1].path)
    candidate = Path(ref)
    for folder in (candidate, root / candidate):
        if folder.is_dir():
            run = RunDir(folder)
            run.read()  # fails with a clear line when run.json is missing
            return run
    raise CheckpointError(
        f"no run {str(ref)!r} (looked for the folder {candidate} and {root / candidate}); "
        "see: lal runs"
    )


def find_runs(refs: list[str], root: Path | None = None) -> list[RunDir]:
    """The runs `refs` name (none: the newest), each once: a run named twice is an error."""
    runs = [find_run(ref, root) for ref in refs or [None]]
    if len({run.path.resolve() for run in runs}) < len(runs):
        raise LalError("a run is named twice; name each run once")
    return runs


def stopped_run(
    ref: str | Path, root: Path | None = None, check_writer: bool = True
) -> tuple[RunDir, RunRecord, dict[str, Any]]:
    """The run `ref` names, its record and the training loop's state saved in its state file
    (read from the file's header alone), once it is clear the run can go on from there: nothing
    writes it now (`check_writer`: rank 0 of a distributed run may hold it already), and it
    has its recipe, its corpus and a saved state. Else a one-line error."""
    run = find_run(str(ref), root)
    record = run.read()
    writer = run.writer(record) if check_writer else None
    if writer is not None:  # the early word; the lock the writer takes is the guard
        raise RunBusy(f"run {run.run_id} is being written by {writer.describe()}")
    if record.train_config is None or record.data is None:
        missing = "train_config" if record.train_config is None else "data"
        raise LalError(f"{run.run_json} is missing {missing!r}; this run cannot be resumed")
    if not (run.path / STATE_FILE).is_file():
        raise LalError(f"run {run.run_id} has no saved training state ({STATE_FILE}) to resume")
    return run, record, read_state_header(run.path / STATE_FILE)


def resolve_checkpoint(ref: str | None, kind: str = "best", root: Path | None = None) -> Path:
    """A checkpoint file: `ref` itself if it is a file, else `kind` within the run `ref` names."""
    if ref and Path(ref).is_file():
        return Path(ref)
    if ref and ref.endswith(".safetensors"):
        raise CheckpointError(f"checkpoint not found: {ref}")
    return find_run(ref, root).existing_checkpoint(kind)


def delete_run(run: RunDir) -> None:
    """Delete a run folder and its checkpoints; refuses a folder that is not a run."""
    import shutil

    if not run.run_json.is_file():
        raise CheckpointError(f"{run.path} is not a run folder (no run.json); not deleting it")
    try:
        shutil.rmtree(run.path)
    except OSError as exc:
        raise CheckpointError(f"could not delete {run.run_id}: {exc.strerror or exc}") from None
