"""Pick the PyTorch device: CUDA, else Apple MPS, else CPU, unless the user names one; and
say which backends and devices this machine has."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lal_core.errors import DeviceError

DEVICES = ("cuda", "mps", "cpu")


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def default_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if mps_available():
        return "mps"
    return "cpu"


def resolve_device(requested: str | None = None) -> torch.device:
    if requested in (None, "", "auto"):
        return torch.device(default_device())
    kind = requested.split(":")[0]
    if kind not in DEVICES:
        raise DeviceError(
            f"unknown device {requested!r}; choose one of: auto, {', '.join(DEVICES)}"
        )
    if kind == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            "--device cuda was asked for but CUDA is not available here; use --device cpu"
        )
    if kind == "mps" and not mps_available():
        raise DeviceError(
            "--device mps was asked for but Apple MPS is not available here; use --device cpu"
        )
    return torch.device(requested)


@dataclass(frozen=True)
class BackendInfo:
    """A backend as this machine has it, for the dashboard's Setup pane."""

    name: str  # "torch" or "mlx"
    installed: bool
    devices: tuple[str, ...]  # what --device takes here, the default first
    line: str  # one line for people


def available_backends() -> list[BackendInfo]:
    """The backends on this machine and their devices (torch's: the best present first)."""
    from lal_core.backends import mlx_available

    devices = [d for d in ("cuda", "mps") if d == default_device()] + ["cpu"]
    line = f"torch {torch.__version__}: cpu"
    if torch.cuda.is_available():
        line += f", cuda ({torch.cuda.get_device_name(0)})"
    if mps_available():
        line += ", mps (Apple GPU)"
    torch_info = BackendInfo("torch", True, tuple(devices), f"{line}; default {devices[0]}")
    if mlx_available():
        import mlx.core as mx

        mlx_devices = ("gpu", "cpu") if mx.is_available(mx.Device(mx.gpu)) else ("cpu",)
        mlx = BackendInfo(
            "mlx", True, mlx_devices, f"mlx {mx.__version__}: {', '.join(mlx_devices)}"
        )
    else:
        mlx = BackendInfo("mlx", False, (), "mlx: not installed; get it with: uv sync --extra mlx")
    return [torch_info, mlx]
