"""Backends: PyTorch (always) and MLX (with the `mlx` extra)."""

from __future__ import annotations

import importlib.util

from lal_core.backends.base import Backend
from lal_core.config import ModelConfig
from lal_core.errors import DeviceError

BACKENDS = ("torch", "mlx")


def mlx_available() -> bool:
    return importlib.util.find_spec("mlx") is not None


def make_backend(
    name: str, cfg: ModelConfig, seed: int = 1337, device: str | None = None
) -> Backend:
    """A backend holding a freshly initialised model for `cfg`."""
    if name == "torch":
        from lal_core.backends.torch_backend import TorchBackend

        return TorchBackend(cfg, seed=seed, device=device)
    if name == "mlx":
        if not mlx_available():
            raise DeviceError("the mlx backend is not installed; run: uv sync --extra mlx")
        from lal_core.backends.mlx_backend import MLXBackend

        return MLXBackend(cfg, seed=seed, device=device)
    raise DeviceError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "make_backend", "mlx_available"]
