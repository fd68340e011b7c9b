"""Run folders: `checkpoints/<run-id>/` with run.json, metrics.jsonl and the checkpoints.

    best.safetensors   the weights at the lowest val loss so far
    final.safetensors  the weights when the run ended (early stop, max iters or a stop request)
    run.json           model and training config, backend, device, data, iteration, best val,
                       status (running, completed, early_stopped, stopped, failed)
    metrics.jsonl      one JSON object per step and per eval

A run whose run.json still says `running` but whose process is gone shows as `interrupted`.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from lal_core import paths
from lal_core.checkpoint import atomic_write, read_json, write_json
from lal_core.errors import CheckpointError

CHECKPOINT_KINDS = ("best", "final", "sft")


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
    def create(cls, config_name: str, backend: str, root: Path | None = None) -> RunDir:
        root = Path(root) if root is not None else paths.runs_dir()
        root.mkdir(parents=True, exist_ok=True)
        run_id = new_run_id(config_name, backend, root)
        (root / run_id).mkdir()
        return cls(root / run_id)

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def checkpoint(self, kind: str) -> Path:
        if kind not in CHECKPOINT_KINDS:
            raise CheckpointError(
                f"unknown checkpoint {kind!r}; choose one of: {', '.join(CHECKPOINT_KINDS)}"
            )
        return self.path / f"{kind}.safetensors"

    def read(self) -> dict[str, Any]:
        if not self.run_json.is_file():
            raise CheckpointError(f"{self.path} is not a run folder (no run.json)")
        return read_json(self.run_json)

    def write(self, info: dict[str, Any]) -> None:
        write_json(self.run_json, info)

    def update(self, **fields: Any) -> dict[str, Any]:
        info = self.read()
        info.update(fields)
        info["updated"] = time.time()
        self.write(info)
        return info

    def append_metrics(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        with open(self.metrics_path, "a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))
            f.flush()

    def drop_metrics_after(self, iteration: int, evaluated: bool) -> None:
        """Forget records past a resume point: they will be made again (rewritten atomically)."""

        def keep(r: dict[str, Any]) -> bool:
            if r.get("type") == "eval":
                return r["iter"] < iteration or (evaluated and r["iter"] == iteration)
            return r.get("iter", 0) < iteration

        kept = [r for r in self.read_metrics() if keep(r)]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        atomic_write(self.metrics_path, lambda tmp: tmp.write_text(text))
        for stale in self.path.glob(".*.tmp"):  # left by a process killed mid-write
            stale.unlink(missing_ok=True)

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every complete record; a last line cut off by a crash is skipped."""
        if not self.metrics_path.is_file():
            return []
        records = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records


def process_info() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class RunSummary:
    run_id: str
    path: Path
    config: str
    backend: str
    device: str
    best_val: float | None
    best_iter: int | None
    iteration: int
    status: str
    created: float

    @property
    def date(self) -> str:
        return datetime.fromtimestamp(self.created).strftime("%Y-%m-%d %H:%M")


def summarize(run: RunDir) -> RunSummary:
    info = run.read()
    status = info.get("status", "unknown")
    owner = info.get("process", {})
    same_host = owner.get("host") == socket.gethostname()
    if status == "running" and same_host and not _alive(int(owner.get("pid", -1))):
        status = "interrupted"
    return RunSummary(
        run_id=run.run_id,
        path=run.path,
        config=info.get("model_config", {}).get("name", "?"),
        backend=info.get("backend", "?"),
        device=info.get("device", "?"),
        best_val=info.get("best_val"),
        best_iter=info.get("best_iter"),
        iteration=int(info.get("iteration", 0)),
        status=status,
        created=float(info.get("created", 0.0)),
    )


def list_runs(root: Path | None = None) -> list[RunSummary]:
    """All readable runs under root, oldest first; unreadable folders are skipped."""
    root = Path(root) if root is not None else paths.runs_dir()
    if not root.is_dir():
        return []
    runs = []
    for folder in root.iterdir():
        if (folder / "run.json").is_file():
            try:
                runs.append(summarize(RunDir(folder)))
            except CheckpointError:
                continue
    return sorted(runs, key=lambda r: (r.created, r.run_id))


def find_run(ref: str | None, root: Path | None = None) -> RunDir:
    """A run folder from a run id, a path to a folder, or (None) the newest run."""
    root = Path(root) if root is not None else paths.runs_dir()
    if ref in (None, ""):
        runs = list_runs(root)
        if not runs:
            raise CheckpointError(
                f"no runs in {root}; train one first with: lal train --config tiny"
            )
        return RunDir(runs[-1].path)
    candidate = Path(ref)
    for folder in (candidate, root / ref):
        if folder.is_dir():
            run = RunDir(folder)
            run.read()  # fails with a clear line when run.json is missing
            return run
    raise CheckpointError(
        f"no run {ref!r} (looked for the folder {candidate} and {root / ref}); see: lal runs"
    )


def resolve_checkpoint(ref: str | None, kind: str = "best", root: Path | None = None) -> Path:
    """A checkpoint file: `ref` itself if it is a file, else `kind` within the run `ref` names."""
    if ref and Path(ref).is_file():
        return Path(ref)
    if ref and ref.endswith(".safetensors"):
        raise CheckpointError(f"checkpoint not found: {ref}")
    run = find_run(ref, root)
    path = run.checkpoint(kind)
    if not path.is_file():
        raise CheckpointError(f"run {run.run_id} has no {kind} checkpoint ({path.name})")
    return path


def delete_run(run: RunDir) -> None:
    """Delete a run folder and its checkpoints; refuses a folder that is not a run."""
    import shutil

    if not run.run_json.is_file():
        raise CheckpointError(f"{run.path} is not a run folder (no run.json); not deleting it")
    try:
        shutil.rmtree(run.path)
    except OSError as exc:
        raise CheckpointError(f"could not delete {run.run_id}: {exc.strerror}") from None
