"""The training recipe: `TrainConfig` (AdamW, warmup and cosine, clipping, evals, early
stopping) and its learning-rate schedule, `lr_at`.

The figures are the original write-up's (docs/recipe.md, Training), and each field is also a
flag of `lal train` and `lal-tui` (`lal_core.cli.flags` says what each flag is for).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from lal_core.errors import ConfigError
from lal_core.generation.controls import DEFAULT_TEMPERATURE
from lal_core.model.config import ModelConfig

# The recipe evaluates every 250 steps of 16 sequences. By default the cadence is kept in
# sequences, not steps: at batch 2 an eval every 250 steps would cost about 30% of the run (its
# forward passes over 2 x 264 windows against 250 steps of 2), at batch 16 about 5%.
EVAL_EVERY_SEQUENCES = 4000

# Sequences of an eval's forward pass at least: an eval needs no gradients, so it need not run
# at a small training batch. 16 of tiny's 128-token windows, fewer of longer ones: one pass holds
# 2,048 tokens, as a batch-16 tiny training pass does.
EVAL_PASS_TOKENS = 2048


def eval_batch_size(cfg: ModelConfig, micro: int = 1) -> int:
    """Windows per forward pass of an eval (and `lal eval`, and the report's val loss): at least
    the training micro batch, and at least EVAL_PASS_TOKENS tokens."""
    return max(micro, EVAL_PASS_TOKENS // cfg.block_size, 1)


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe: AdamW, warmup + cosine, clipping, evals, early stopping."""

    batch_size: int = 16  # sequences per optimizer step
    micro_batch: int = 0  # sequences per forward pass, gradients accumulated; 0: the whole batch
    max_iters: int = 5000  # optimizer steps at most
    lr: float = 3e-4  # peak learning rate
    min_lr: float = 0.0  # where the cosine ends
    warmup_iters: int = 100  # steps of linear warmup
    weight_decay: float = 0.1  # AdamW's, on matrices and embeddings only
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # the global gradient norm's limit
    eval_interval: int = 0  # steps between evals; 0: every EVAL_EVERY_SEQUENCES sequences
    eval_tokens: int = 40_000  # val tokens an eval scores at most (spread evenly); 0: all
    patience: int = 4  # evals without a new best before early stopping
    eval_samples: int = 3  # samples drawn after each eval, to watch it write; 0: none
    eval_sample_tokens: int = 64  # tokens per such sample, at most
    eval_temperature: float = DEFAULT_TEMPERATURE  # theirs (top-k 50): lal sample's default
    seed: int = 1337  # weights, batches, dropout
    ema: float = 0.0  # the decay of the weights' moving average, evaluated beside them; 0: none
    label_smoothing: float = 0.0  # target mass spread over the vocabulary; evals score without

    def validate(self) -> TrainConfig:
        positive = ("batch_size", "max_iters", "patience")
        for key in positive:
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"{key.replace('_', '-')} must be a positive integer, got {value}"
                )
        for key in ("eval_interval", "eval_tokens"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(
                    f"{key.replace('_', '-')} must be 0 (the default) or a positive integer, "
                    f"got {value}"
                )
        if not isinstance(self.eval_samples, int) or self.eval_samples < 0:
            raise ConfigError(
                f"eval-samples must be 0 (none) or a positive integer, got {self.eval_samples}"
            )
        if not isinstance(self.eval_sample_tokens, int) or self.eval_sample_tokens < 1:
            raise ConfigError(
                f"eval-sample-tokens must be a positive integer, got {self.eval_sample_tokens}"
            )
        if not (math.isfinite(self.eval_temperature) and self.eval_temperature >= 0):
            raise ConfigError(
                f"eval-temperature must be 0 (greedy) or more, got {self.eval_temperature}"
            )
        if not isinstance(self.micro_batch, int) or self.micro_batch < 0:
            raise ConfigError(
                f"micro-batch must be 0 (the whole batch) or more, got {self.micro_batch}"
            )
        if self.batch_size % self.micro:
            divisors = [d for d in range(1, self.batch_size + 1) if self.batch_size % d == 0]
            raise ConfigError(
                f"micro-batch {self.micro_batch} does not divide batch-size {self.batch_size}; "
                f"use one of {', '.join(map(str, divisors))}"
            )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if not (math.isfinite(self.min_lr) and 0 <= self.min_lr <= self.lr):
            raise ConfigError(f"min-lr must be between 0 and lr ({self.lr}), got {self.min_lr}")
        if self.warmup_iters < 0:
            raise ConfigError(f"warmup-iters must be 0 or more, got {self.warmup_iters}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight-decay must be 0 or more, got {self.weight_decay}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(f"betas must be in [0, 1), got ({self.beta1}, {self.beta2})")
        if not 0 <= self.ema < 1:
            raise ConfigError(f"ema must be 0 (none) or a decay in (0, 1), got {self.ema}")
        if not (math.isfinite(self.label_smoothing) and 0 <= self.label_smoothing < 1):
            raise ConfigError(
                f"label-smoothing must be 0 (none) or in (0, 1), got {self.label_smoothing}"
            )
        if not self.grad_clip > 0:
            raise ConfigError(f"grad-clip must be positive, got {self.grad_clip}")
        return self

    @property
    def micro(self) -> int:
        """Sequences per forward pass: the micro batch, or the whole batch."""
        return self.micro_batch or self.batch_size

    def micro_per_rank(self, ranks: int = 1) -> int:
        """Sequences per forward pass on each of `ranks` ranks: the micro batch, or a rank's
        whole share of the batch. A one-line ConfigError where the batch does not divide."""
        if ranks == 1:
            return self.micro
        if self.batch_size % ranks:
            raise ConfigError(
                f"batch-size {self.batch_size} does not split over {ranks} ranks; use a "
                f"multiple of {ranks}"
            )
        share = self.batch_size // ranks
        if share % (self.micro_batch or share):
            divisors = [d for d in range(1, share + 1) if share % d == 0]
            raise ConfigError(
                f"micro-batch {self.micro_batch} does not divide a rank's {share} of "
                f"batch-size {self.batch_size} over {ranks} ranks; use one of "
                f"{', '.join(map(str, divisors))}"
            )
        return self.micro_batch or share

    @property
    def evals_every(self) -> int:
        """Steps between evals: the eval interval, or the recipe's cadence in sequences."""
        return self.eval_interval or max(1, round(EVAL_EVERY_SEQUENCES / self.batch_size))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        # A run from before eval_tokens scored all of val; one from before eval samples drew
        # none; one from before the average kept none; one from before eval_temperature drew
        # its samples at the sampler's default then, 0.8.
        legacy = {"eval_tokens": 0, "eval_samples": 0, "ema": 0.0, "eval_temperature": 0.8}
        data = {**legacy, **data}
        return cls(**{k: v for k, v in data.items() if k in known}).validate()


# Where a named config trains by default with more than TrainConfig's defaults (the write-up's
# recipe): the fields it changes (docs/recipe.md, Where lal departs from it). Small overfits
# TinyShakespeare's 304k train tokens from about iteration 1,000 (13 epochs of them): with the
# cosine over 5,000 iterations its learning rate was still 93% of the peak there; over 1,500 it
# is low where val loss is lowest: best val 4.6469 @ 1500 against 4.6705 @ 1250 (dropout 0.2,
# seed 1337). AdamW's beta2 0.99 (nanoGPT's for its character model: few tokens per step, and
# small's 4,096 are fewer) averages the squared gradients over ~100 steps, not ~20, so one noisy
# batch sways the step size less: ahead at every eval on two seeds, best 4.6293 against 4.6469
# (seed 1337) and 4.6011 against 4.6176 (seed 2). Label smoothing 0.03: by iteration 500 small
# is over-confident on unseen text (dividing its logits by 1.1 lowers val loss by 0.02, and the
# 2% of val tokens the train split never holds cost 16 nats each, 1.6 more than spreading their
# rate evenly would: bench/calibration.py); trained against a target with 3% spread over the
# vocabulary, it was ahead from iteration 500 on (README.md, Training).
CONFIG_RECIPES: dict[str, dict[str, Any]] = {
    "small": {"max_iters": 1500, "beta2": 0.99, "label_smoothing": 0.03}
}


def default_recipe(config: str) -> TrainConfig:
    """The recipe a named config trains with unless told otherwise: TrainConfig's defaults
    with the config's own (`CONFIG_RECIPES`). Any other name: TrainConfig's defaults."""
    return replace(TrainConfig(), **CONFIG_RECIPES.get(config, {}))


def lr_at(iteration: int, cfg: TrainConfig) -> float:
    """The learning rate for the optimisation step taken at `iteration` (0-based)."""
    if iteration < cfg.warmup_iters:
        # (iteration + 1) so that iteration 0 already moves the weights: 3e-4 / 100 = 3e-6.
        return cfg.lr * (iteration + 1) / cfg.warmup_iters
    if iteration >= cfg.max_iters:
        return cfg.min_lr
    progress = (iteration - cfg.warmup_iters) / max(1, cfg.max_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))
