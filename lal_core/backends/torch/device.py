"""The PyTorch device: which one (CUDA, else Apple MPS, else the CPU, unless the user names
one), its peak FLOP/s, what MFU is measured against (`lal_core.model.cost.mfu`), and how
batches reach it (`Staging`)."""

from __future__ import annotations

import functools
import time

import numpy as np
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


def cpu_has_fast_bf16() -> bool:
    """True where oneDNN runs bf16 matmuls natively (AVX-512 BF16, AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


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


# Dense peak TFLOP/s by CUDA device name, (16-bit tensor cores, float32 / TF32), from the vendor
# data sheets. The first name contained in torch.cuda.get_device_name() wins.
CUDA_PEAK_TFLOPS: dict[str, tuple[float, float]] = {
    "H200": (989.0, 494.0),
    "H100 PCIe": (756.0, 378.0),
    "H100": (989.0, 494.0),
    "GH200": (989.0, 494.0),
    "B200": (2250.0, 1100.0),
    "A100": (312.0, 156.0),
    "A10G": (70.0, 35.0),
    "A10": (125.0, 62.5),
    "L40S": (362.0, 183.0),
    "L40": (181.0, 90.5),
    "L4": (121.0, 60.0),
    "A6000": (155.0, 77.4),
    "4090": (165.0, 82.6),
    "3090": (71.0, 35.6),
    "V100": (125.0, 15.7),
    "T4": (65.0, 8.1),
}


@functools.cache
def measure_matmul_flops(device: str = "cpu", dtype: str = "float32", size: int = 1024) -> float:
    """The best FLOP/s of a few square matmuls: a quick, honest peak for CPUs and MPS.

    On a busy machine it reads low (and MFU high); pass a peak to compare runs across machines.
    """
    import torch

    dt = getattr(torch, dtype)
    # Its own generator: drawing from the global one would shift a training run's dropout
    # masks, and only in the first run of a process (this is cached).
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, generator=gen).to(dt)
    b = torch.randn(size, size, device=device, generator=gen).to(dt)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        elif device.startswith("mps"):
            torch.mps.synchronize()

    a @ b  # warm up
    sync()
    best = float("inf")
    for _ in range(10):
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best


def default_peak_flops(device: torch.device, dtype: str = "float32") -> float | None:
    """Peak FLOP/s for MFU: the data sheet on known CUDA GPUs, a quick matmul elsewhere."""
    import torch

    sixteen = dtype in ("bfloat16", "float16")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (half, single) in CUDA_PEAK_TFLOPS.items():
            if key in name:
                return (half if sixteen else single) * 1e12
        return measure_matmul_flops(str(device), dtype if sixteen else "float32", 4096)
    if device.type == "cpu":
        fast = dtype if sixteen and cpu_has_fast_bf16() else "float32"
        return measure_matmul_flops("cpu", fast)
    return measure_matmul_flops(str(device), dtype, 2048)


class Staging:
    """Token batches onto the device. On CUDA through reused page-locked memory, so the copy
    runs asynchronously; a buffer is reused only after the step that used it has synchronised
    (loss.item())."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._pinned: dict[tuple, torch.Tensor] = {}

    def __call__(self, a: np.ndarray, slot: str = "x") -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a))
        if self.device.type != "cuda":
            return t.to(self.device)
        key = (slot, tuple(t.shape), t.dtype)
        if key not in self._pinned:
            if len(self._pinned) > 8:
                self._pinned.clear()
            self._pinned[key] = torch.empty(t.shape, dtype=t.dtype).pin_memory()
        pinned = self._pinned[key]
        pinned.copy_(t)
        return pinned.to(self.device, non_blocking=True)
