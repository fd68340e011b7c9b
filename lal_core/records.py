"""The files of a run folder, typed: `run.json` and the lines of `metrics.jsonl`.

Each record has one writer (`to_json`) and one reader (`from_json`); the engine, the command
line, the dashboard and the tests all go through them, never through the raw keys. The JSON
layout is `FORMAT_VERSION`; a reader takes every older layout and refuses a newer one in one
line. Keys a newer lal added are kept as they are (`extra`), so rewriting run.json keeps them.

    run.json       RunRecord: configs, backend, device, data, progress, status, owner, SFT
    metrics.jsonl  one StepRecord per step, one EvalRecord per eval ({"type": "step"|"eval"})
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from lal_core.config import ModelConfig, TrainConfig
from lal_core.errors import CheckpointError, ConfigError

FORMAT_VERSION = 1  # raise it when the layout changes; readers keep reading the older ones
RUN_STATUSES = ("running", "completed", "early_stopped", "stopped", "failed")


def _typed(data: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any = None):
    """data[key] if it has the right type, `default` if absent or null; else a one-line error."""
    value = data.get(key)
    if value is None:
        return default
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CheckpointError(f"{key} holds {value!r}, which is not {_kind_name(kind)}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "text", dict: "an object", list: "a list"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _finite_or_none(value: float) -> float | None:
    return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class ProcessInfo:
    """The process that owns (writes) a run: while it lives, nothing else may."""

    pid: int
    host: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessInfo:
        return cls(pid=_typed(data, "pid", int, -1), host=_typed(data, "host", str, ""))


@dataclass(frozen=True)
class CorpusInfo:
    """The text a run trained on, so a resume can check it is still the same."""

    path: str
    sha256: str | None = None
    tokens: int | None = None
    train_tokens: int | None = None
    val_tokens: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CorpusInfo:
        return cls(
            path=_typed(data, "path", str, ""),
            sha256=_typed(data, "sha256", str),
            tokens=_typed(data, "tokens", int),
            train_tokens=_typed(data, "train_tokens", int),
            val_tokens=_typed(data, "val_tokens", int),
        )


@dataclass(frozen=True)
class ResumeMark:
    """Where a run was continued from (`lal train --resume`), and when."""

    iteration: int
    time: float


@dataclass(frozen=True)
class SFTRecord:
    """How a run's `sft.safetensors` was made (`lal sft`)."""

    epochs: int
    batch_size: int
    lr: float
    seed: int
    pairs: str  # a pairs file's path, "built-in" or "given"
    n_pairs: int
    examples: int
    status: str = "completed"  # "completed" or "stopped"
    epochs_done: int = 0
    losses: tuple[float, ...] = ()  # the masked loss of each finished epoch
    steps: int = 0
    skipped_batches: int = 0
    cut_examples: int = 0
    backend: str = "torch"
    device: str = "?"
    elapsed: float = 0.0
    finished: float | None = None

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["losses"] = list(self.losses)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SFTRecord:
        losses = _typed(data, "losses", list, [])
        return cls(
            epochs=_typed(data, "epochs", int, 0),
            batch_size=_typed(data, "batch_size", int, 0),
            lr=_typed(data, "lr", float, 0.0),
            seed=_typed(data, "seed", int, 0),
            pairs=_typed(data, "pairs", str, "built-in"),
            n_pairs=_typed(data, "n_pairs", int, 0),
            examples=_typed(data, "examples", int, 0),
            status=_typed(data, "status", str, "completed"),
            epochs_done=_typed(data, "epochs_done", int, len(losses)),
            losses=tuple(float(v) for v in losses),
            steps=_typed(data, "steps", int, 0),
            skipped_batches=_typed(data, "skipped_batches", int, 0),
            cut_examples=_typed(data, "cut_examples", int, 0),
            backend=_typed(data, "backend", str, "torch"),
            device=_typed(data, "device", str, "?"),
            elapsed=_typed(data, "elapsed", float, 0.0),
            finished=_typed(data, "finished", float),
        )


@dataclass(frozen=True)
class RunRecord:
    """run.json: what a run is (configs, backend, data) and where it stands (status, best)."""

    run_id: str
    model_config: ModelConfig
    created: float = 0.0
    train_config: TrainConfig | None = None  # None only in hand-made folders: not resumable
    backend: str = "torch"
    device: str = "?"
    backend_options: dict[str, Any] = field(default_factory=dict)  # kept so a resume matches
    n_params: int | None = None
    data: CorpusInfo | None = None
    iteration: int = 0
    best_val: float | None = None
    best_iter: int | None = None
    status: str = "running"  # as written; see `runs.RunEntry.status` for "interrupted"
    process: ProcessInfo | None = None
    resumed: tuple[ResumeMark, ...] = ()
    error: str | None = None
    updated: float | None = None
    sft: SFTRecord | None = None
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # keys this lal does not know

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format_version": FORMAT_VERSION, "run_id": self.run_id}
        out.update(
            created=self.created,
            model_config=self.model_config.to_dict(),
            train_config=self.train_config.to_dict() if self.train_config else None,
            backend=self.backend,
            device=self.device,
            backend_options=dict(self.backend_options),
            n_params=self.n_params,
            data=_plain(self.data),
            iteration=self.iteration,
            best_val=_finite_or_none(self.best_val),
            best_iter=self.best_iter,
            status=self.status,
            process=_plain(self.process),
            resumed=[_plain(r) for r in self.resumed],
            error=self.error,
            updated=self.updated,
        )
        if self.sft is not None:
            out["sft"] = self.sft.to_json()
        return {**self.extra, **out}

    @classmethod
    def from_json(cls, data: dict[str, Any], run_id: str) -> RunRecord:
        """The record in a parsed run.json (`run_id`: the folder's name, if it names none).

        Raises CheckpointError, one line, for a layout from a newer lal or a value of the
        wrong type."""
        version = _typed(data, "format_version", int, 1)
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"run.json is format {version}, newer than this lal reads ({FORMAT_VERSION}); "
                "upgrade lal"
            )
        if "model_config" not in data:
            raise CheckpointError("run.json has no model_config")
        try:
            model_cfg = ModelConfig.from_dict(_typed(data, "model_config", dict))
            train = _typed(data, "train_config", dict)
            train_cfg = TrainConfig.from_dict(train) if train is not None else None
        except ConfigError as exc:
            raise CheckpointError(f"run.json has an unusable config ({exc})") from None
        return cls(
            run_id=_typed(data, "run_id", str, run_id),
            model_config=model_cfg,
            created=_typed(data, "created", float, 0.0),
            train_config=train_cfg,
            backend=_typed(data, "backend", str, "torch"),
            device=_typed(data, "device", str, "?"),
            backend_options=_typed(data, "backend_options", dict, {}),
            n_params=_typed(data, "n_params", int),
            data=_nested(data, "data", CorpusInfo.from_json),
            iteration=_typed(data, "iteration", int, 0),
            best_val=_typed(data, "best_val", float),
            best_iter=_typed(data, "best_iter", int),
            status=_typed(data, "status", str, "unknown"),
            process=_nested(data, "process", ProcessInfo.from_json),
            resumed=tuple(
                ResumeMark(_typed(r, "iteration", int, 0), _typed(r, "time", float, 0.0))
                for r in _typed(data, "resumed", list, [])
                if isinstance(r, dict)
            ),
            error=_typed(data, "error", str),
            updated=_typed(data, "updated", float),
            sft=_nested(data, "sft", SFTRecord.from_json),
            format_version=version,
            extra={k: v for k, v in data.items() if k not in _RUN_KEYS},
        )


_RUN_KEYS = {f.name for f in fields(RunRecord)} - {"extra"}


def _plain(record: Any) -> dict[str, Any] | None:
    if record is None:
        return None
    return {f.name: getattr(record, f.name) for f in fields(record)}


def _nested(data: dict[str, Any], key: str, read):
    value = _typed(data, key, dict)
    return None if value is None else read(value)


# -- metrics.jsonl -----------------------------------------------------------------------------
@dataclass(frozen=True)
class StepRecord:
    """One optimisation step: {"type": "step", "iter", "loss", "lr", "tok_s", "elapsed"}."""

    iteration: int
    loss: float
    lr: float
    tokens_per_sec: float
    elapsed: float  # seconds since the run started (earlier sessions of a resumed run included)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "step",
            "iter": self.iteration,
            "loss": self.loss,
            "lr": self.lr,
            "tok_s": self.tokens_per_sec,
            "elapsed": self.elapsed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepRecord:
        return cls(
            iteration=_typed(data, "iter", int, 0),
            loss=_typed(data, "loss", float, math.nan),
            lr=_typed(data, "lr", float, 0.0),
            tokens_per_sec=_typed(data, "tok_s", float, 0.0),
            elapsed=_typed(data, "elapsed", float, 0.0),
        )


@dataclass(frozen=True)
class EvalRecord:
    """One eval: train and val loss, whether it is a new best, and the throughput before it."""

    iteration: int
    train_loss: float
    val_loss: float
    lr: float
    is_best: bool
    tokens_per_sec: float  # mean over the steps since the previous eval
    elapsed: float
    eval_seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "eval",
            "iter": self.iteration,
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "lr": self.lr,
            "best": self.is_best,
            "tok_s": self.tokens_per_sec,
            "elapsed": self.elapsed,
            "eval_s": self.eval_seconds,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalRecord:
        return cls(
            iteration=_typed(data, "iter", int, 0),
            train_loss=_typed(data, "train_loss", float, math.nan),
            val_loss=_typed(data, "val_loss", float, math.nan),
            lr=_typed(data, "lr", float, 0.0),
            is_best=bool(data.get("best", False)),
            tokens_per_sec=_typed(data, "tok_s", float, 0.0),
            elapsed=_typed(data, "elapsed", float, 0.0),
            eval_seconds=_typed(data, "eval_s", float, 0.0),
        )


MetricRecord = StepRecord | EvalRecord
_METRIC_TYPES = {"step": StepRecord, "eval": EvalRecord}


def metric_from_json(data: Any) -> MetricRecord | None:
    """A metrics.jsonl line's record; None for a line this lal does not know or cannot read."""
    if not isinstance(data, dict) or data.get("type") not in _METRIC_TYPES:
        return None
    try:
        return _METRIC_TYPES[data["type"]].from_json(data)
    except CheckpointError:
        return None
