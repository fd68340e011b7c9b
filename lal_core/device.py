"""Pick the PyTorch device: CUDA, else Apple MPS, else CPU, unless the user names one."""

from __future__ import annotations

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
