"""What the weights' moving average (`--ema DECAY`) costs: memory, time per step, time per eval.

    uv run python bench/ema.py [--configs tiny small] [--backends torch mlx] [--steps 8]

Per config and backend, one process: a backend set up with an ema decay takes `--steps`
training steps at the recipe's batch; each step is timed, and so is the average's update after
it, alone (the update is the backend's own, called again on the same weights: it costs what
the one inside `train_step` costs). Then an eval of the live weights and an eval of the average
(`average_val_loss`, the weights swapped in and back) over the same val windows. It prints the
average's size (one float32 copy of the weights), the update's median time and its share of the
median step, and the average's eval over the live eval. Run it on a quiet machine: `ps` first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from lal_core.backends import make_backend
from lal_core.data.corpus import load_corpus
from lal_core.model.config import count_parameters, get_model_config
from lal_core.model.recipe import TrainConfig
from lal_core.training.evals import average_val_loss, evaluate

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"  # this workplace's offline copies, where there are
if "TIKTOKEN_CACHE_DIR" not in os.environ and (SHARED / "tiktoken-cache").is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED / "tiktoken-cache")


def update_seconds(backend) -> float:
    """One update of the average, timed alone (the backend's own method, as train_step calls
    it)."""
    t0 = time.perf_counter()
    if backend.name == "torch":
        backend._average.update_parameters(backend.model)
    else:
        backend._update_average()
    return time.perf_counter() - t0


def measure(config: str, backend_name: str, steps: int, data: str | None) -> str:
    model_cfg = get_model_config(config)
    recipe = TrainConfig(ema=0.99)
    backend = make_backend(backend_name, model_cfg, device="cpu")
    backend.setup_training(recipe)
    rng = np.random.default_rng(0)
    step_s, update_s = [], []
    for _ in range(steps):
        x = rng.integers(0, model_cfg.vocab_size, (recipe.batch_size, model_cfg.block_size))
        t0 = time.perf_counter()
        backend.train_step(x, np.roll(x, -1, axis=1), 1e-4)
        step_s.append(time.perf_counter() - t0)
        update_s.append(update_seconds(backend))
    corpus = load_corpus(data, block_size=model_cfg.block_size)
    cfg = TrainConfig(eval_tokens=8192)
    t0 = time.perf_counter()
    evaluate(backend, corpus, cfg)
    live = time.perf_counter() - t0
    t0 = time.perf_counter()
    average_val_loss(backend, corpus, cfg)
    averaged = time.perf_counter() - t0
    step, update = statistics.median(step_s[2:]), statistics.median(update_s[2:])
    megabytes = count_parameters(model_cfg) * 4 / 1e6
    return (
        f"| {config} | {backend_name} | {megabytes:,.0f} MB | {step * 1e3:,.0f} ms | "
        f"{update * 1e3:.1f} ms | {update / step:.1%} | {live:.1f} s | {averaged:.1f} s |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "small"])
    parser.add_argument("--backends", nargs="+", default=["torch", "mlx"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--data", default=os.environ.get("LAL_TEST_CORPUS"))
    args = parser.parse_args()
    print(
        "| config | backend | average's memory | step | update | update / step "
        "| eval (8,192 val tokens + as many train) | average's eval (val only) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for config in args.configs:
        for backend in args.backends:
            print(measure(config, backend, args.steps, args.data), flush=True)


if __name__ == "__main__":
    main()
