"""Backends: what differs per framework, behind one interface (`base.Backend`): PyTorch
(always, `torch/`) and MLX (with the `mlx` extra, `mlx/`); `make_backend` builds one, and
`available_backends` says which this machine has.

    base.py         the interface: the model's weights, a training step, an eval's loss, the
                    sampling steps; arrays cross it as numpy
    distributed.py  data-parallel ranks: torch.distributed (torchrun) or MLX's (mlx.launch)
    torch/, mlx/    the two backends

May import: errors, model. Importing this package imports no framework: a backend's own
modules import theirs when it is built.
"""

from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass
from typing import Any

from lal_core.backends.base import Backend
from lal_core.errors import ConfigError, DeviceError
from lal_core.model.config import ModelConfig

BACKENDS = ("torch", "mlx")


def mlx_available() -> bool:
    return importlib.util.find_spec("mlx") is not None


MLX_INSTALL = "uv sync --extra mlx"  # how to get MLX where it is missing
# The command-line switch behind an option, for the error when a backend lacks it.
OPTION_FLAGS = {"compile": "--no-compile", "int8_head": "--no-int8-head"}


def _check_options(cls: type, name: str, options: dict[str, Any]) -> None:
    """Every option must be one cls's constructor takes: an option the backend cannot honour
    is an error, not silently dropped (`--backend mlx --dtype float16` would otherwise train in
    float32 without a word)."""
    params = inspect.signature(cls).parameters
    for key in options:
        if key not in params:
            flag = OPTION_FLAGS.get(key, "--" + key.replace("_", "-"))
            raise ConfigError(f"{flag} does not apply to the {name} backend; drop it")


def make_backend(
    name: str, cfg: ModelConfig, seed: int = 1337, device: str | None = None, **options: Any
) -> Backend:
    """A backend holding a freshly initialised model for `cfg`.

    `options` are the backend's fast-path switches, e.g. dtype="float32", compile=False (None
    or absent: the measured default for the device); one the backend lacks is a ConfigError.
    """
    options = {k: v for k, v in options.items() if v is not None}
    if name == "torch":
        from lal_core.backends.torch.backend import TorchBackend

        _check_options(TorchBackend, name, options)
        return TorchBackend(cfg, seed=seed, device=device, **options)
    if name == "mlx":
        if not mlx_available():
            raise DeviceError(f"the mlx backend is not installed; run: {MLX_INSTALL}")
        from lal_core.backends.mlx.backend import MLXBackend

        _check_options(MLXBackend, name, options)
        return MLXBackend(cfg, seed=seed, device=device, **options)
    raise DeviceError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")


@dataclass(frozen=True)
class BackendInfo:
    """A backend as this machine has it, for the dashboard's Setup pane."""

    name: str  # "torch" or "mlx"
    devices: tuple[str, ...]  # what --device takes here, the default first (none: missing)
    line: str  # one line for people


def available_backends() -> list[BackendInfo]:
    """The backends on this machine and their devices (torch's: the best present first)."""
    import torch

    from lal_core.backends.torch.device import default_device, mps_available

    devices = [d for d in ("cuda", "mps") if d == default_device()] + ["cpu"]
    line = f"torch {torch.__version__}: cpu"
    if torch.cuda.is_available():
        line += f", cuda ({torch.cuda.get_device_name(0)})"
    if mps_available():
        line += ", mps (Apple GPU)"
    torch_info = BackendInfo("torch", tuple(devices), f"{line}; default {devices[0]}")
    if mlx_available():
        import mlx.core as mx

        mlx_devices = ("gpu", "cpu") if mx.is_available(mx.Device(mx.gpu)) else ("cpu",)
        mlx = BackendInfo("mlx", mlx_devices, f"mlx {mx.__version__}: {', '.join(mlx_devices)}")
    else:
        mlx = BackendInfo("mlx", (), f"mlx: not installed; get it with: {MLX_INSTALL}")
    return [torch_info, mlx]


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendInfo",
    "available_backends",
    "make_backend",
    "mlx_available",
]
