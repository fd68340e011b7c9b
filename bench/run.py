"""Benchmarks: lal's engine against a naive reference, in one process, steps interleaved.

    uv run python bench/run.py [--configs tiny small] [--steps 6] [--tokens 200]

Prints training tokens/s (batch 16) and sampling tokens/s and time to first token (batch 1),
for lal and the reference, with the ratio. Absolute figures drift on shared machines; the
ratios, measured side by side in one run, are the figures to compare.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference import NaiveGPT  # noqa: E402

from lal_core.backends import make_backend  # noqa: E402
from lal_core.config import TrainConfig, get_model_config  # noqa: E402
from lal_core.sampling import generate_ids  # noqa: E402


def reference_trainer(cfg, state):
    model = NaiveGPT(cfg)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)

    def step(x, y):
        _, loss = model(torch.from_numpy(x), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    return model, step


def bench_training(name: str, steps: int, batch: int) -> dict:
    cfg = get_model_config(name)
    lal = make_backend("torch", cfg, seed=0)
    lal.setup_training(TrainConfig(batch_size=batch))
    _, ref_step = reference_trainer(cfg, lal.state_dict())
    rng = np.random.default_rng(0)
    times = {"lal": [], "reference": []}
    for i in range(steps + 1):  # the first step of each warms up and is not counted
        x = rng.integers(0, cfg.vocab_size, (batch, cfg.block_size))
        y = rng.integers(0, cfg.vocab_size, (batch, cfg.block_size))
        steppers = (("lal", lambda a, b: lal.train_step(a, b, 3e-4)), ("reference", ref_step))
        for label, step in steppers:
            t0 = time.perf_counter()
            step(x, y)
            if i:
                times[label].append(time.perf_counter() - t0)
    tokens = batch * cfg.block_size
    return {k: tokens / statistics.median(v) for k, v in times.items()}


def bench_sampling(name: str, n_tokens: int) -> dict:
    cfg = get_model_config(name)
    lal = make_backend("torch", cfg, seed=0)
    ref = NaiveGPT(cfg).eval()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in lal.state_dict().items()})
    prompt = [198] * 8
    out = {}
    for label in ("lal", "reference"):
        t0 = time.perf_counter()
        first = None
        if label == "lal":
            gen = generate_ids(lal, prompt, n_tokens, temperature=0.8, top_k=50, seed=0)
        else:
            gen = ref.generate(torch.tensor([prompt]), n_tokens)
        for _ in gen:
            first = first or time.perf_counter() - t0
        total = time.perf_counter() - t0
        out[label] = (n_tokens / total, first * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "small"])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=200)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    print(f"\nTraining, batch {args.batch_size}, median of {args.steps} steps (tokens/s)")
    print(f"{'config':<8} {'lal':>10} {'reference':>10} {'ratio':>7}")
    for name in args.configs:
        r = bench_training(name, args.steps, args.batch_size)
        print(
            f"{name:<8} {r['lal']:>10,.0f} {r['reference']:>10,.0f} "
            f"{r['lal'] / r['reference']:>6.2f}x"
        )
    print(f"\nSampling, batch 1, {args.tokens} new tokens (tokens/s, first token ms)")
    print(f"{'config':<8} {'lal':>10} {'ttft':>7} {'reference':>10} {'ttft':>7} {'ratio':>7}")
    for name in args.configs:
        r = bench_sampling(name, args.tokens)
        (a, ta), (b, tb) = r["lal"], r["reference"]
        print(f"{name:<8} {a:>10,.1f} {ta:>7.1f} {b:>10,.1f} {tb:>7.1f} {a / b:>6.2f}x")


if __name__ == "__main__":
    main()
