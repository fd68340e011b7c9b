"""Learning-rate schedule: linear warmup, then a half cosine down to min_lr at max_iters."""

import math

from lal_core.config import TrainConfig


def lr_at(iteration: int, cfg: TrainConfig) -> float:
    """The learning rate for the optimisation step taken at `iteration` (0-based)."""
    if iteration < cfg.warmup_iters:
        # (iteration + 1) so that iteration 0 already moves the weights: 3e-4 / 100 = 3e-6.
        return cfg.lr * (iteration + 1) / cfg.warmup_iters
    if iteration >= cfg.max_iters:
        return cfg.min_lr
    progress = (iteration - cfg.warmup_iters) / max(1, cfg.max_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))
