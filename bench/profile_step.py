"""Where a training step's time goes, op by op: lal's defaults under torch.profiler.

    uv run python bench/profile_step.py                       # tiny and small, batch 16
    uv run python bench/profile_step.py --configs small --steps 4 --top 25

Builds lal's TorchBackend with its defaults (what `lal train` runs on this machine), takes
one warm-up step, then profiles `--steps` steps on random tokens. It prints, per config:

- the ops by self time per step (an op's own time, without the ops it calls), the top few;
- the same time in groups: the matmuls (with their share at the bench's measured peak, the
  time they would take there), attention's kernel, the softmax, dropout's masks, AdamW, the
  LayerNorms, GELU, copies and type casts, and the rest;
- the step's wall time, and its tokens/s against the limit row of bench/run.py (every FLOP at
  the measured matmul peak of the training dtype).

The profiler's own overhead is a few percent on these steps; compare the groups' shares, not
the step's wall time, with bench/run.py's figures.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from lal_core.backends.torch.backend import TorchBackend
from lal_core.backends.torch.device import cpu_has_fast_bf16, measure_matmul_flops
from lal_core.model.config import get_model_config
from lal_core.model.cost import flops_per_token
from lal_core.model.recipe import TrainConfig

# Op name (or its start) -> group. Anything else is "other".
GROUPS = [
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul")),
    ("attention kernel", ("aten::_scaled_dot_product_flash_attention", "aten::_flash_attention")),
    ("softmax", ("aten::_softmax", "aten::_softmax_backward_data", "aten::softmax")),
    ("dropout masks", ("aten::bernoulli_", "aten::native_dropout", "aten::rand", "aten::uniform_")),
    ("AdamW", ("aten::_fused_adamw_", "aten::_foreach_")),
    ("LayerNorm", ("aten::native_layer_norm",)),
    ("GELU", ("aten::gelu",)),
    ("copies and casts", ("aten::copy_", "aten::to", "aten::_to_copy", "aten::clone")),
    ("embedding", ("aten::embedding",)),
]


def group_of(name: str) -> str:
    for group, prefixes in GROUPS:
        if any(name == p or name.startswith(p) for p in prefixes):
            return group
    return "other"


def profile_config(name: str, batch: int, steps: int, top: int, peak: float) -> None:
    cfg = get_model_config(name)
    backend = TorchBackend(cfg, seed=0)
    backend.setup_training(TrainConfig(batch_size=batch))
    rng = np.random.default_rng(0)

    def batch_tokens():
        return rng.integers(0, cfg.vocab_size, (batch, cfg.block_size))

    backend.train_step(batch_tokens(), batch_tokens(), 3e-4)  # warm-up
    walls = []
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            x, y = batch_tokens(), batch_tokens()
            t0 = time.perf_counter()
            backend.train_step(x, y, 3e-4)
            walls.append(time.perf_counter() - t0)
    wall_ms = statistics.median(walls) * 1e3
    ops = [(e.key, e.self_cpu_time_total / 1e3 / steps, e.count // steps)
           for e in prof.key_averages()]  # fmt: skip
    ops.sort(key=lambda op: -op[1])
    profiled_ms = sum(ms for _, ms, _ in ops)

    tokens = batch * cfg.block_size
    rate = tokens / (wall_ms / 1e3)
    limit = peak / flops_per_token(cfg)
    print(f"\n## {name}, batch {batch}, {backend.describe()}")
    print(
        f"step {wall_ms:,.0f} ms (median of {steps}, profiled), {rate:,.0f} tokens/s; limit row "
        f"{limit:,.0f} tokens/s ({peak / 1e9:.0f} GFLOP/s): {rate / limit:.0%} of it"
    )
    print("\n| op | ms a step | share | calls |\n|---|---|---|---|")
    for key, ms, calls in ops[:top]:
        print(f"| `{key}` | {ms:,.1f} | {ms / profiled_ms:.1%} | {calls} |")

    groups: dict[str, float] = collections.defaultdict(float)
    for key, ms, _ in ops:
        groups[group_of(key)] += ms
    at_peak_ms = flops_per_token(cfg) * tokens / peak * 1e3
    print("\n| group | ms a step | share |\n|---|---|---|")
    for group, ms in sorted(groups.items(), key=lambda g: -g[1]):
        print(f"| {group} | {ms:,.1f} | {ms / profiled_ms:.1%} |")
    print(
        f"\nThe step's FLOPs at the peak: {at_peak_ms:,.0f} ms; the matmuls took "
        f"{groups['matmul']:,.0f} ms ({at_peak_ms / max(groups['matmul'], 1e-9):.0%} of the "
        f"peak's rate), everything else {profiled_ms - groups['matmul']:,.0f} ms."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "small"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps per config")
    parser.add_argument("--top", type=int, default=20, help="ops listed per config")
    args = parser.parse_args()
    bf16 = cpu_has_fast_bf16()
    peak = measure_matmul_flops("cpu", "bfloat16" if bf16 else "float32")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {bf16}; matmul peak "
        f"{peak / 1e9:.0f} GFLOP/s ({'bf16' if bf16 else 'fp32'})"
    )
    for name in args.configs:
        profile_config(name, args.batch_size, args.steps, args.top, peak)


if __name__ == "__main__":
    main()
