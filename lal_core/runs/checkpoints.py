"""Checkpoints: weights in safetensors, metadata in JSON, written atomically; no pickle anywhere.

A checkpoint file holds float32 tensors under the canonical names (see `expected_shapes`) and,
in the safetensors header, `{"format": "lal", "format_version": "1", "model_config": <json>}`.
Loading checks all of that and says in one line what is wrong with a file that is truncated,
foreign, from a newer version, or for another model shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from lal_core.errors import CheckpointError, ConfigError
from lal_core.model.config import ModelConfig
from lal_core.runs.files import atomic_write

FORMAT = "lal"
FORMAT_VERSION = 1


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The canonical tensor names and shapes of a model: the layout both backends share."""
    C, V = cfg.n_embd, cfg.vocab_size
    shapes: dict[str, tuple[int, ...]] = {"wte.weight": (V, C), "wpe.weight": (cfg.block_size, C)}

    def linear(name: str, n_in: int, n_out: int) -> None:
        shapes[f"{name}.weight"] = (n_out, n_in)
        if cfg.bias:
            shapes[f"{name}.bias"] = (n_out,)

    def layer_norm(name: str) -> None:
        shapes[f"{name}.weight"] = (C,)
        if cfg.bias:
            shapes[f"{name}.bias"] = (C,)

    for i in range(cfg.n_layer):
        layer_norm(f"blocks.{i}.ln_1")
        linear(f"blocks.{i}.attn.c_attn", C, 3 * C)
        linear(f"blocks.{i}.attn.c_proj", C, C)
        layer_norm(f"blocks.{i}.ln_2")
        linear(f"blocks.{i}.mlp.c_fc", C, 4 * C)
        linear(f"blocks.{i}.mlp.c_proj", 4 * C, C)
    layer_norm("ln_f")
    return shapes


# -- weights -----------------------------------------------------------------------------------
def save_weights(
    path: Path, tensors: dict[str, np.ndarray], cfg: ModelConfig, meta: dict[str, Any] | None = None
) -> None:
    """Write float32 weights and their model config to `path`, atomically."""
    header = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "model_config": json.dumps(cfg.to_dict()),
    }
    header.update({k: json.dumps(v) for k, v in (meta or {}).items()})
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    write_tensors(path, arrays, header, "checkpoint")


def write_tensors(path: Path, arrays: dict[str, np.ndarray], header: dict, what: str) -> None:
    """A safetensors file, written whole or not at all; a failure (a full disk) is one line."""
    try:
        atomic_write(path, lambda tmp: save_file(arrays, str(tmp), metadata=header))
    except (OSError, SafetensorError) as exc:
        reason = getattr(exc, "strerror", None) or (str(exc).splitlines() or [""])[0]
        raise CheckpointError(f"cannot write {what} {path}: {reason}") from None


def read_header(path: Path) -> dict[str, str]:
    """The metadata of a lal checkpoint, checked to be one (format and version)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:100] if str(exc) else "unreadable"
        raise CheckpointError(
            f"{path} is not a valid safetensors checkpoint (truncated or another format: {reason})"
        ) from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a lal checkpoint")
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise CheckpointError(f"{path} has an unreadable format_version") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} is checkpoint format {version}, newer than this lal reads "
            f"({FORMAT_VERSION}); upgrade lal"
        )
    return meta


def read_model_config(path: Path) -> ModelConfig:
    meta = read_header(path)
    try:
        return ModelConfig.from_dict(json.loads(meta["model_config"]))
    except (KeyError, json.JSONDecodeError, ConfigError) as exc:
        raise CheckpointError(f"{path} has no usable model config ({exc})") from None


def load_weights(
    path: Path, expected: ModelConfig | None = None
) -> tuple[dict[str, np.ndarray], ModelConfig]:
    """Read and check a checkpoint: float32 tensors by name, and the model config they fit.

    With `expected`, the file must be for that config (same names and shapes).
    """
    path = Path(path)
    cfg = read_model_config(path)
    if expected is not None and _shape_key(expected) != _shape_key(cfg):
        raise CheckpointError(
            f"{path} is for config {cfg.name} ({_describe(cfg)}), "
            f"not {expected.name} ({_describe(expected)})"
        )
    want = expected_shapes(cfg)
    try:
        with safe_open(str(path), framework="numpy") as f:
            names = set(f.keys())
            missing, extra = sorted(set(want) - names), sorted(names - set(want))
            if missing or extra:
                parts = []
                if missing:
                    parts.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
                if extra:
                    parts.append(f"{len(extra)} unexpected tensors (e.g. {extra[0]})")
                raise CheckpointError(f"{path} does not match its config: {', '.join(parts)}")
            tensors = {name: f.get_tensor(name) for name in want}
    except (SafetensorError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:100]
        raise CheckpointError(f"{path} is damaged or truncated ({reason})") from None
    for name, shape in want.items():
        if tuple(tensors[name].shape) != shape:
            raise CheckpointError(
                f"{path}: tensor {name} has shape {tuple(tensors[name].shape)}, expected {shape}"
            )
        if tensors[name].dtype != np.float32:
            tensors[name] = tensors[name].astype(np.float32)
    return tensors, cfg


def _shape_key(cfg: ModelConfig) -> tuple:
    return (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.vocab_size, cfg.bias)


def _describe(cfg: ModelConfig) -> str:
    return f"{cfg.n_layer} layers, {cfg.n_head} heads, width {cfg.n_embd}, context {cfg.block_size}"


# -- resumable training state ------------------------------------------------------------------
STATE_FILE = "state.safetensors"


def save_state(
    path: Path,
    weights: dict[str, np.ndarray],
    optimizer: dict[str, np.ndarray],
    cfg: ModelConfig,
    trainer_state: dict[str, Any],
) -> None:
    """One atomic file with everything exact resume needs: weights ("w.<name>"), optimizer and
    RNG arrays ("opt.<key>"), and the loop's own state as JSON in the header."""
    tensors = {f"w.{k}": np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
    tensors.update({f"opt.{k}": np.ascontiguousarray(v) for k, v in optimizer.items()})
    header = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "kind": "training_state",
        "model_config": json.dumps(cfg.to_dict()),
        "trainer_state": json.dumps(trainer_state),
    }

    write_tensors(path, tensors, header, "training state")


def load_state(
    path: Path, expected: ModelConfig
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
    """(weights, optimizer arrays, trainer state) from a state file, checked against `expected`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path.parent} has no saved training state ({path.name}) to resume")
    meta = read_header(path)
    cfg = read_model_config(path)
    if _shape_key(cfg) != _shape_key(expected):
        raise CheckpointError(f"{path} is for config {cfg.name}, not {expected.name}")
    try:
        trainer_state = json.loads(meta["trainer_state"])
        with safe_open(str(path), framework="numpy") as f:
            arrays = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except (KeyError, json.JSONDecodeError, SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is damaged ({str(exc).splitlines()[0][:100]})") from None
    weights = {k[2:]: v for k, v in arrays.items() if k.startswith("w.")}
    optimizer = {k[4:]: v for k, v in arrays.items() if k.startswith("opt.")}
    want = expected_shapes(cfg)
    if {k: tuple(v.shape) for k, v in weights.items()} != want:
        raise CheckpointError(f"{path} does not hold this model's weights")
    return weights, optimizer, trainer_state


def read_state_header(path: Path) -> dict[str, Any]:
    """The loop state saved in a state file's header (iteration, best val, ...), without
    reading its tensors."""
    try:
        return json.loads(read_header(path)["trainer_state"])
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"{path} holds no training state") from None
