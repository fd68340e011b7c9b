"""Backends: PyTorch (always) and MLX (with the `mlx` extra)."""

from __future__ import annotations

import importlib.util
import inspect
from typing import Any

from lal_core.backends.base import Backend
from lal_core.config import ModelConfig
from lal_core.errors import DeviceError

BACKENDS = ("torch", "mlx")


def mlx_available() -> bool:
    return importlib.util.find_spec("mlx") is not None


def _accepted(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """The options that cls's constructor takes (others do not apply to that backend)."""
    params = inspect.signature(cls).parameters
    return {k: v for k, v in options.items() if k in params}


def make_backend(
    name: str, cfg: ModelConfig, seed: int = 1337, device: str | None = None, **options: Any
) -> Backend:
    """A backend holding a freshly initialised model for `cfg`.

    `options` are the backend's fast-path switches, e.g. dtype="float32", compile=False (None
    or absent: the measured default for the device); a backend ignores those it lacks.
    """
    options = {k: v for k, v in options.items() if v is not None}
    if name == "torch":
        from lal_core.backends.torch_backend import TorchBackend

        return TorchBackend(cfg, seed=seed, device=device, **_accepted(TorchBackend, options))
    if name == "mlx":
        if not mlx_available():
            raise DeviceError("the mlx backend is not installed; run: uv sync --extra mlx")
        from lal_core.backends.mlx_backend import MLXBackend

        return MLXBackend(cfg, seed=seed, device=device, **_accepted(MLXBackend, options))
    raise DeviceError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "make_backend", "mlx_available"]
