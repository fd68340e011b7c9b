"""Model FLOPs and model-FLOPs utilisation (MFU): how much of the hardware's peak a run uses.

Training costs about 6 FLOPs per parameter per token (2 forward, 4 backward), plus attention's
score and weighted-sum matmuls, which have no parameters (PaLM, appendix B):

    flops_per_token = 6 * N + 12 * n_layer * n_embd * block_size

N counts the weights that take part in matmuls: every parameter except the position embedding
(a lookup); the tied token embedding counts once, for the output head. MFU is
tokens/s * flops_per_token / peak FLOP/s, against a peak the user can set (--peak-tflops) or a
default for the device.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING

from lal_core.config import ModelConfig, count_parameters

if TYPE_CHECKING:  # torch is imported where it is used: the dashboard imports this module
    import torch

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


def flops_per_token(cfg: ModelConfig) -> int:
    """Training FLOPs per token: 6 * N plus the attention term (PaLM-style)."""
    n = count_parameters(cfg) - cfg.block_size * cfg.n_embd  # the position lookup is no matmul
    return 6 * n + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size


def mfu(tokens_per_sec: float, cfg: ModelConfig, peak_flops: float | None) -> float | None:
    """Model-FLOPs utilisation in [0, 1] (None without a peak)."""
    if not peak_flops or tokens_per_sec <= 0:
        return None
    return tokens_per_sec * flops_per_token(cfg) / peak_flops


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
        from lal_core.precision import cpu_has_fast_bf16

        fast = dtype if sixteen and cpu_has_fast_bf16() else "float32"
        return measure_matmul_flops("cpu", fast)
    return measure_matmul_flops(str(device), dtype, 2048)
