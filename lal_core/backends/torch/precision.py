"""Which fast path to use on which device: the PyTorch backend's defaults, one function each.

Mixed precision keeps the master weights, their gradients and AdamW's moments in float32 and
runs the matmuls in a 16-bit type under `torch.autocast`; checkpoints stay float32. Every
default here can be overridden by the backend's options (`--dtype`, `--no-compile`, ...);
each rests on a measurement recorded in bench/README.md, under the function's name.
"""

from __future__ import annotations

import contextlib
import importlib.util

import torch

from lal_core.backends.torch.device import cpu_has_fast_bf16
from lal_core.backends.torch.int8_head import int8_head_works
from lal_core.errors import ConfigError
from lal_core.model.config import ModelConfig
from lal_core.model.cost import activations_need_recompute

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_dtype(device: torch.device) -> str:
    """Training: bf16 on CUDA (fp16 without it) and on CPUs with native bf16; else float32."""
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
    """Compile on CUDA (where Triton is present); eager on CPU and MPS, where compiling took
    about a minute and paid nothing."""
    return device.type == "cuda" and compile_available(device)[0]


def fused_adamw_available(device: torch.device) -> bool:
    """Fused AdamW kernels exist for CUDA, MPS and (torch >= 2.4) CPU."""
    return device.type in ("cuda", "mps", "cpu") and tuple(
        int(v) for v in torch.__version__.split(".")[:2]
    ) >= (2, 4)


def default_chunked_loss(device: torch.device) -> bool:
    """The chunked loss everywhere but CUDA, where the plain one compiled is faster."""
    return device.type != "cuda"


def default_recompute(device: torch.device, cfg: ModelConfig, batch_size: int) -> bool:
    """Activation checkpointing off CUDA where the blocks would keep over 4 GiB for backward;
    on CUDA the GPU's memory holds it, and recomputing would cost speed (pass it on a small
    GPU)."""
    if device.type == "cuda":
        return False
    return activations_need_recompute(cfg, batch_size)


def default_infer_dtype(device: torch.device) -> str:
    """16-bit weights for sampling's one-token steps: each step reads every weight once, so
    half the bytes is nearly half the time, native 16-bit matmuls or not. bfloat16 keeps
    float32's range, so nothing overflows where float16 might."""
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device.type == "cpu":
        return "bfloat16"
    return "float32"


def native_16bit_matmuls(device: torch.device, dtype: str) -> bool:
    """Whether matmuls in `dtype` run natively, i.e. at least as fast as float32 when they are
    compute-bound (a prompt's forward); on an AVX2 CPU they are converted in software."""
    if dtype == "float32" or device.type in ("cuda", "mps"):
        return True
    return device.type == "cpu" and dtype == "bfloat16" and cpu_has_fast_bf16()


def default_int8_head(device: torch.device, infer_dtype: str, cfg: ModelConfig) -> bool:
    """The int8 head in bfloat16 sampling copies on a CPU, if the kernel passes its probe at
    this model's shape: half the bytes of the bf16 head, and faster where bf16 is emulated
    (the AVX2 EPYC: 1.39x tiny, 1.22x small) and where it is native (AMX Xeon: bench/README)."""
    return (
        device.type == "cpu"
        and infer_dtype == "bfloat16"
        and int8_head_works(device, cfg.n_embd, cfg.vocab_size)
    )
