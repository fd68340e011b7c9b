"""The files of a run folder, typed: `run.json` and the lines of `metrics.jsonl`.

Each record has one writer (`to_json`) and one reader (`from_json`); the engine, the command
line, the dashboard and the tests all go through them, never through the raw keys. The JSON
layout is `FORMAT_VERSION`; a reader takes every older layout and refuses a newer one in one
line. Keys a newer lal added are kept as they are (`extra`), so rewriting run.json keeps them.

    run.json       RunRecord: configs, backend, device, data, progress, status, owner, SFT
    metrics.jsonl  one StepRecord per step, one EvalRecord per eval, and one SamplesRecord for
                   the samples drawn after an eval, with their writing figures (`Figures`)
                   ({"type": "step"|"eval"|"samples"})

A flat record is read field by field (`read_fields`): each JSON value is checked against the
field's type, a missing one takes the field's default, and a wrong one is a one-line
CheckpointError naming the key.
"""

from __future__ import annotations

import functools
import json
import math
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from lal_core.errors import CheckpointError, ConfigError
from lal_core.model.config import ModelConfig
from lal_core.model.recipe import TrainConfig

# Raise it when the layout changes; readers keep reading the older ones. 2: metrics.jsonl logs
# every event (not only steps and evals), sft_metrics.jsonl, .lock, process.started.
FORMAT_VERSION = 2
RUN_STATUSES = ("running", "completed", "early_stopped", "stopped", "failed")
_KIND_NAMES = {int: "an integer", float: "a number", str: "text", dict: "an object", list: "a list"}


# Type hints of a record class, looked up once per class: reading a log line is a hot path
# (`lal watch` and the dashboard replay every line of a run's log).
type_hints = functools.cache(typing.get_type_hints)


def json_kind(hint: Any) -> type:
    """The JSON type a field's annotation reads from: `float | None` -> float, tuple -> list."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    origin = typing.get_origin(hint) or hint
    return list if origin is tuple else origin


def _optional(hint: Any) -> bool:
    """Whether a field's annotation admits None (`float | None`): a null is its value then."""
    return type(None) in typing.get_args(hint)


def checked(data: dict[str, Any], key: str, kind: type, default: Any = None) -> Any:
    """data[key] if it has the JSON type `kind`, `default` if absent or null; else a one-line
    CheckpointError naming the key."""
    value = data.get(key)
    if value is None:
        return default
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        what = _KIND_NAMES.get(kind, kind.__name__)
        raise CheckpointError(f"{key} holds {value!r}, which is not {what}")
    return tuple(value) if kind is list else value


def read_fields(cls: type, data: dict[str, Any], keys: dict[str, str] | None = None, /, **given):
    """A record of the dataclass `cls` from JSON: each field from its key (`keys` renames),
    checked against its type; `given` fields are taken as they are (nested records)."""
    hints = type_hints(cls)
    values = dict(given)
    for f in fields(cls):
        if f.name in given or not f.init:
            continue
        key = (keys or {}).get(f.name, f.name)
        required = f.default is MISSING and f.default_factory is MISSING
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        value = checked(data, key, json_kind(hints[f.name]), None if required else default)
        if value is None and required and not (key in data and _optional(hints[f.name])):
            raise CheckpointError(f"{key} is missing")
        values[f.name] = value
    return cls(**values)


def write_fields(record: Any, keys: dict[str, str] | None = None) -> dict[str, Any]:
    """A flat record as JSON (tuples as lists), each field under its key."""
    out = {}
    for f in fields(record):
        value = getattr(record, f.name)
        out[(keys or {}).get(f.name, f.name)] = list(value) if isinstance(value, tuple) else value
    return out


@dataclass(frozen=True)
class ProcessInfo:
    """The process that owns (writes) a run: while it lives, nothing else may."""

    pid: int = -1
    host: str = ""
    started: float | None = None  # time.time() when it took the run: a reused pid is not it


@dataclass(frozen=True)
class CorpusInfo:
    """The text a run trained on, so a resume can check it is still the same."""

    path: str = ""
    sha256: str | None = None
    tokens: int | None = None
    train_tokens: int | None = None
    val_tokens: int | None = None
    eval_tokens: int | None = None  # val tokens each eval scores (--eval-tokens caps them)


@dataclass(frozen=True)
class ResumeMark:
    """Where a run was continued from (`lal train --resume`), and when."""

    iteration: int = 0
    time: float = 0.0


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
    world_size: int = 1  # ranks of a data-parallel run (torchrun); 1: one process
    micro_per_rank: int | None = None  # sequences per forward pass on each rank, if several
    n_params: int | None = None
    data: CorpusInfo | None = None
    iteration: int = 0
    best_val: float | None = None
    best_iter: int | None = None
    best_bpb: float | None = None  # the best's val loss in bits per byte
    status: str = "running"  # as written; see `runs.RunEntry.status` for "interrupted"
    process: ProcessInfo | None = None
    resumed: tuple[ResumeMark, ...] = ()
    error: str | None = None
    updated: float | None = None
    sft: SFTRecord | None = None
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # keys this lal does not know

    def to_json(self) -> dict[str, Any]:
        out = write_fields(self)
        del out["extra"]
        best = self.best_val
        out.update(
            format_version=FORMAT_VERSION,
            model_config=self.model_config.to_dict(),
            train_config=self.train_config.to_dict() if self.train_config else None,
            backend_options=dict(self.backend_options),
            data=write_fields(self.data) if self.data else None,
            best_val=best if best is not None and math.isfinite(best) else None,
            process=write_fields(self.process) if self.process else None,
            resumed=[write_fields(r) for r in self.resumed],
            sft=write_fields(self.sft) if self.sft else None,
        )
        if out["sft"] is None:
            del out["sft"]  # as format 1 wrote it: no key until the run is fine-tuned
        if out["best_bpb"] is None:
            del out["best_bpb"]  # a run from before bits per byte: as it was written
        if self.world_size == 1:  # one process, as lal always wrote it: no keys
            del out["world_size"], out["micro_per_rank"]
        return {**self.extra, **out}

    @classmethod
    def from_json(cls, data: dict[str, Any], run_id: str) -> RunRecord:
        """The record in a parsed run.json (`run_id`: the folder's name, if it names none).

        Raises CheckpointError, one line, for a layout from a newer lal or a value of the
        wrong type."""
        version = checked(data, "format_version", int, 1)
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"run.json is format {version}, newer than this lal reads ({FORMAT_VERSION}); "
                "upgrade lal"
            )
        if "model_config" not in data:
            raise CheckpointError("run.json has no model_config")
        model, train = checked(data, "model_config", dict), checked(data, "train_config", dict)
        try:
            model_cfg = ModelConfig.from_dict(model)
            train_cfg = TrainConfig.from_dict(train) if train is not None else None
        except ConfigError as exc:
            raise CheckpointError(f"run.json has an unusable config ({exc})") from None

        def nested(key: str, kind: type):
            value = checked(data, key, dict)
            return None if value is None else read_fields(kind, value)

        marks = checked(data, "resumed", list, ())
        return read_fields(
            cls,
            {"run_id": run_id, **data},
            model_config=model_cfg,
            train_config=train_cfg,
            data=nested("data", CorpusInfo),
            process=nested("process", ProcessInfo),
            resumed=tuple(read_fields(ResumeMark, m) for m in marks if isinstance(m, dict)),
            sft=nested("sft", SFTRecord),
            status=checked(data, "status", str, "unknown"),
            format_version=version,
            extra={k: v for k, v in data.items() if k not in _RUN_KEYS},
        )


_RUN_KEYS = {f.name for f in fields(RunRecord)} - {"extra"}


# -- metrics.jsonl -----------------------------------------------------------------------------
# Field -> key where a metrics line's key is not the field's name (format 1's short keys).
METRIC_KEYS = {
    "iteration": "iter",
    "tokens_per_sec": "tok_s",
    "is_best": "best",
    "eval_seconds": "eval_s",
}


@dataclass(frozen=True)
class StepRecord:
    """One optimisation step: {"type": "step", "iter", "loss", "lr", "tok_s", "elapsed"}."""

    iteration: int
    loss: float
    lr: float = 0.0
    tokens_per_sec: float = 0.0
    elapsed: float = 0.0  # seconds since the run started (a resumed run's earlier sessions too)

    def to_json(self) -> dict[str, Any]:
        return {"type": "step", **write_fields(self, METRIC_KEYS)}


@dataclass(frozen=True)
class EvalRecord:
    """One eval: train and val loss, whether it is a new best, and the throughput before it."""

    iteration: int
    train_loss: float
    val_loss: float
    lr: float = 0.0
    is_best: bool = False
    tokens_per_sec: float = 0.0  # mean over the steps since the previous eval
    elapsed: float = 0.0
    eval_seconds: float = 0.0
    val_bpb: float | None = None  # val loss in bits per byte (None: a run from before it)
    ema_val_loss: float | None = None  # the weights' moving average's (None: none kept)

    def to_json(self) -> dict[str, Any]:
        return {"type": "eval", **write_fields(self, METRIC_KEYS)}


@dataclass(frozen=True)
class Figures:
    """A column's figures (or the held-out text's), each a mean over its samples, and the
    standard errors of those means (the samples' standard deviation over the square root of
    their number; None for one sample, and in files written before them)."""

    samples: int
    distinct_1: float | None
    distinct_2: float | None
    repeated_4: float | None  # share of 4-grams repeating an earlier one of the same sample
    looping: int  # samples caught in a loop
    memorised_8: float | None  # share of 8-grams found verbatim in the training split
    longest: int  # tokens in the longest verbatim stretch of any sample
    longest_text: str
    closed: float | None = None  # chat mode: share of answers the model closed
    val_loss: float | None = None
    distinct_1_se: float | None = None
    distinct_2_se: float | None = None
    repeated_4_se: float | None = None
    memorised_8_se: float | None = None
    invented_words: float | None = None  # share of words the training text never uses
    invented_words_se: float | None = None

    def to_json(self) -> dict[str, Any]:
        return write_fields(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Figures:
        return read_fields(cls, data)

    def describe(self, held_out: Figures | None = None) -> str:
        """The writing figures in one line, the held-out text's after each in brackets:
        `distinct-2 0.97 (0.91) | repeated 4-grams 0% (3%) | in a loop 0/3 (0/3) | memorised
        8-grams 0% (6%) | longest verbatim 2 (10) tokens`."""

        def pair(of: Callable[[Figures], str]) -> str:
            return of(self) + (f" ({of(held_out)})" if held_out is not None else "")

        parts = [
            "distinct-2 " + pair(lambda f: _number(f.distinct_2, ".2f")),
            "repeated 4-grams " + pair(lambda f: _number(f.repeated_4, ".0%")),
            "in a loop " + pair(lambda f: f"{f.looping}/{f.samples}"),
        ]
        if self.memorised_8 is not None:
            parts.append("memorised 8-grams " + pair(lambda f: _number(f.memorised_8, ".0%")))
            parts.append("longest verbatim " + pair(lambda f: str(f.longest)) + " tokens")
        if self.invented_words is not None:
            parts.append("invented words " + pair(lambda f: _number(f.invented_words, ".1%")))
        if self.closed is not None:
            parts.append(f"closed {self.closed:.0%}")
        return " | ".join(parts)


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


SAMPLES_STATUSES = ("done", "stopped", "failed")


@dataclass(frozen=True)
class SamplesRecord:
    """The samples drawn after one eval (fine-tuning: at an epoch's end), whole, and their
    writing figures beside those of the held-out text that follows the same prompts."""

    iteration: int
    status: str = "done"  # "stopped": a stop request came midway; "failed": see `line`
    prompts: tuple[str, ...] = ()
    texts: tuple[str, ...] = ()  # each sample's text, without its prompt
    figures: Figures | None = None  # None unless done
    held_out: Figures | None = None  # None: no held-out text (fine-tuning, a tiny val split)
    seconds: float = 0.0
    line: str = ""  # failed: why, in one line

    def to_json(self) -> dict[str, Any]:
        out = write_fields(self, METRIC_KEYS)
        for key in ("figures", "held_out"):
            value = getattr(self, key)
            out[key] = value.to_json() if value is not None else None
        return {"type": "samples", **out}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SamplesRecord:
        nested = {}
        for key in ("figures", "held_out"):
            value = data.get(key)
            nested[key] = Figures.from_json(value) if isinstance(value, dict) else None
        return read_fields(cls, data, METRIC_KEYS, **nested)


MetricRecord = StepRecord | EvalRecord | SamplesRecord


def metric_from_json(data: Any) -> MetricRecord | None:
    """A metrics.jsonl line's record; None for a line this lal does not know or cannot read
    (no iteration or loss). Throughput and timing a line lacks read as 0."""
    kinds = {"step": StepRecord, "eval": EvalRecord}
    if not isinstance(data, dict):
        return None
    try:
        if data.get("type") == "samples":
            return SamplesRecord.from_json(data)
        if data.get("type") not in kinds:
            return None
        return read_fields(kinds[data["type"]], data, METRIC_KEYS)
    except CheckpointError:
        return None


def read_metrics(path: Path) -> list[MetricRecord]:
    """Every complete step and eval record of a metrics log; a last line cut off by a crash is
    skipped, as are lines of other events."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = metric_from_json(json.loads(line))
        except json.JSONDecodeError:
            continue
        if record is not None:
            records.append(record)
    return records
