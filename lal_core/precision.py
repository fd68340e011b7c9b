"""Numeric precision and compilation: which fast paths to use on which device.

Mixed precision keeps the master weights, their gradients and AdamW's moments in float32 and
runs the matmuls in a 16-bit type under `torch.autocast`; checkpoints stay float32.

Defaults (the CPU ones measured with bench/run.py):
- CUDA: bfloat16 where the GPU has it (Ampere and later), else float16 with a GradScaler;
  torch.compile on (Triton present). Not measured on a GPU for this project: these follow the
  hardware's documented fast paths.
- CPU: bfloat16 only where oneDNN has native bf16 kernels (AVX-512 BF16 or AMX). On an AVX2-only
  CPU a bf16 matmul is emulated: measured on a 2-core AVX2 EPYC, 1.2 GFLOP/s in bf16 against
  122 GFLOP/s in float32, about 100x slower, so float32 is the default there.
- CPU: eager, not compiled (see `default_compile`); fused AdamW (its step measured 3-4x
  faster than foreach here).
- MPS: float32 and eager (no measurement on Apple hardware was made for this choice; pass
  --dtype bfloat16 / float16 to try autocast there).
"""

from __future__ import annotations

import contextlib
import importlib.util

import torch

from lal_core.errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cpu_has_fast_bf16() -> bool:
    """True where oneDNN runs bf16 matmuls natively (AVX-512 BF16, AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def default_dtype(device: torch.device) -> str:
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device.type == "cpu":
        return "bfloat16" if cpu_has_fast_bf16() else "float32"
    return "float32"  # mps and anything else


def resolve_dtype(name: str | None, device: torch.device) -> str:
    """The training dtype's name: the user's choice, or the measured default for the device."""
    if name in (None, "", "auto"):
        return default_dtype(device)
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {name!r}; choose one of: {', '.join(DTYPES)}")
    return name


def autocast(device: torch.device, dtype: str):
    """Autocast to `dtype` on `device`; a no-op context for float32."""
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


def compile_available(device: torch.device) -> tuple[bool, str]:
    """(can torch.compile work here, why not). Inductor needs Triton on CUDA, a C++ compiler
    on CPU; it is not used on MPS or on Windows."""
    import shutil
    import sys

    if sys.platform == "win32":
        return False, "torch.compile is not supported on Windows"
    if device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            return False, "Triton is not installed"
        return True, ""
    if device.type == "cpu":
        if not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
            return False, "no C++ compiler found"
        return True, ""
    return False, f"torch.compile is not used on {device.type}"


def default_compile(device: torch.device) -> bool:
    """Compile by default on CUDA (where Triton is present); eager on CPU and MPS.

    On the CPU, measured here (2-core AVX2 EPYC, tiny, batch 16, steps interleaved): compiling
    took 51 s (137 s with a cold cache) and the compiled step was no faster within the noise,
    because the 50,257-wide head, a single large matmul either way, is most of the work. Pass
    compile=True to try it on a CPU where it pays.
    """
    return device.type == "cuda" and compile_available(device)[0]
