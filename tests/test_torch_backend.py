"""The PyTorch backend's training step: a step whose gradient is not finite is skipped whole;
on a CPU, a step's large tensors reuse the memory the last step freed.

The MLX twin is `test_non_finite_gradient_skips_the_update` in tests/test_mlx.py.
"""

import math
import platform
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MICRO, random_tokens
from lal_core.backends.torch.backend import TorchBackend
from lal_core.model.recipe import TrainConfig

LR = 1e-3
BATCHES = [
    (random_tokens((2, 16), seed=2 * i + 1), random_tokens((2, 16), seed=2 * i + 2))
    for i in range(3)
]


def trained_once(dtype: str) -> TorchBackend:
    """A micro model on the CPU, eager, after one good step (so AdamW has moments to keep)."""
    backend = TorchBackend(MICRO, seed=0, device="cpu", dtype=dtype, compile=False)
    backend.setup_training(TrainConfig(batch_size=2))
    assert math.isfinite(backend.train_step(*BATCHES[0], LR))
    return backend


def adamw_state(backend: TorchBackend) -> dict[str, np.ndarray]:
    """AdamW's step count and moments (not the RNG state, which a step may or may not draw on)."""
    state = {
        k: v for k, v in backend.optimizer_state().items() if k.split(".")[0] in ("step", "m", "v")
    }
    assert state["step"][0] == 1 and any(k.startswith("m.") for k in state)
    return state


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    changed = [k for k in a if not np.array_equal(a[k], b[k])]
    assert changed == [], f"changed by the skipped step: {changed[:5]}"


def infinite_gradient(backend: TorchBackend):
    """A hook that makes one weight's gradient infinite; the forward, and the loss, untouched."""
    weight = backend.model.blocks[0].mlp.c_fc.weight
    return weight.register_hook(lambda grad: grad * math.inf)


def nan_activations(backend: TorchBackend):
    """A hook that turns the first block's output into nan: the loss itself is nan."""
    return backend.model.blocks[0].register_forward_hook(lambda module, inputs, out: out * math.nan)


@pytest.mark.parametrize("poison", [infinite_gradient, nan_activations], ids=["gradient", "loss"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_non_finite_step_is_skipped(poison, dtype):
    backend = trained_once(dtype)
    weights, adamw = backend.state_dict(), adamw_state(backend)

    hook = poison(backend)
    if poison is infinite_gradient:  # the loss is finite: only the gradient is not
        assert math.isfinite(backend.eval_loss(*BATCHES[1]))
    assert math.isnan(backend.train_step(*BATCHES[1], LR))
    hook.remove()

    assert_same(backend.state_dict(), weights)
    assert_same(adamw_state(backend), adamw)

    # The skipped step leaves no trace (no stale gradient, no moment, no step count): the next
    # good step gives exactly what it gives a model that never met the bad batch.
    assert math.isfinite(backend.train_step(*BATCHES[2], LR))
    twin = trained_once(dtype)
    twin.train_step(*BATCHES[2], LR)
    assert backend.optimizer_state()["step"][0] == 2
    assert_same(backend.state_dict(), twin.state_dict())
    assert_same(
        {k: v for k, v in backend.optimizer_state().items() if not k.startswith("rng.")},
        {k: v for k, v in twin.optimizer_state().items() if not k.startswith("rng.")},
    )


def test_float16_overflow_is_skipped_by_the_loss_scaler():
    """float16 is the exception by design: an overflowed gradient is expected now and then, so
    the GradScaler skips that update and lowers its scale, and the step's loss stands."""
    backend = trained_once("float16")
    weights, adamw = backend.state_dict(), adamw_state(backend)
    scale = backend.optimizer_state()["scaler.scale"][0]

    hook = infinite_gradient(backend)
    assert math.isfinite(backend.train_step(*BATCHES[1], LR))
    hook.remove()

    assert_same(backend.state_dict(), weights)
    assert_same(adamw_state(backend), adamw)
    assert backend.optimizer_state()["scaler.scale"][0] < scale


def faults_of_a_block_again(mb: int = 96) -> int:
    """Page faults taken filling a block of `mb` MB, as a step does, once blocks of that size
    have come and gone: the fewest of three, after two (which may grow the heap, whose new
    pages fault, or find it laid out otherwise by earlier tests)."""
    faults = []
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.empty(mb << 18).fill_(1.0)  # mb << 18 float32 = mb MB, freed at once
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return min(faults[2:])


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc's malloc settings",
)
def test_cpu_training_reuses_freed_memory_instead_of_faulting_it_in_again():
    # In a fresh process: glibc's starting state, whatever this one's earlier tests left in its
    # heap. There a block this large is mapped apart, unmapped when freed, and the next one
    # faulted in page by page; once training is set up, freed blocks are kept for the next.
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from test_torch_backend import faults_of_a_block_again, trained_once\n"
        "print(faults_of_a_block_again())\n"
        "trained_once('float32')  # setup_training on the CPU\n"
        "print(faults_of_a_block_again())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(Path(__file__).parent)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    before, after = map(int, done.stdout.split())
    pages = (96 << 20) // resource.getpagesize()
    assert before > pages // 2
    assert after < pages // 10
