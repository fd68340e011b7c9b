"""Model and training configurations, with validation.

A config is a small frozen dataclass; `validate()` raises `ConfigError` with one line that names
the bad value, so the CLI and the dashboard can show it as it is.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from lal_core.errors import ConfigError

VOCAB_SIZE = 50257  # r50k_base, the GPT-2 BPE


@dataclass(frozen=True)
class ModelConfig:
    name: str
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    vocab_size: int = VOCAB_SIZE
    dropout: float = 0.0
    bias: bool = False  # no biases in Linear and LayerNorm, as in the SPEC's parameter counts

    def validate(self) -> ModelConfig:
        for key in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        return self

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config keys: {', '.join(unknown)}")
        try:
            return cls(**data).validate()
        except TypeError as exc:
            raise ConfigError(f"incomplete model config: {exc}") from None


# The named configs train with dropout 0.1, not the SPEC's 0: on tiny, CPU, to max-iters or
# early stop, the best val was 4.7713 @ 3000 without dropout (early stop at 4000), 4.7275 @ 5000
# with 0.1 and 4.7527 @ 5000 with 0.2 (README.md, Training). `--dropout 0` is the SPEC's regime.
DEFAULT_DROPOUT = 0.1

MODEL_CONFIGS: dict[str, ModelConfig] = {
    "tiny": ModelConfig("tiny", n_layer=4, n_head=4, n_embd=128, block_size=128),
    "small": ModelConfig("small", n_layer=6, n_head=6, n_embd=384, block_size=256),
    "medium": ModelConfig("medium", n_layer=8, n_head=8, n_embd=512, block_size=512),
    "lal": ModelConfig("lal", n_layer=12, n_head=12, n_embd=768, block_size=512),
}
MODEL_CONFIGS = {name: replace(c, dropout=DEFAULT_DROPOUT) for name, c in MODEL_CONFIGS.items()}


def get_model_config(name: str, **overrides: Any) -> ModelConfig:
    """The named config, with optional overrides (e.g. dropout=0.1)."""
    if name not in MODEL_CONFIGS:
        raise ConfigError(f"unknown config {name!r}; choose one of: {', '.join(MODEL_CONFIGS)}")
    return replace(MODEL_CONFIGS[name], **overrides).validate()


def count_parameters(cfg: ModelConfig) -> int:
    """Parameters of the GPT with weight tying (the output head IS the token embedding)."""
    C = cfg.n_embd
    bias = 1 if cfg.bias else 0
    embeddings = cfg.vocab_size * C + cfg.block_size * C
    layer_norm = 2 * C if cfg.bias else C
    attn = C * 3 * C + bias * 3 * C + C * C + bias * C
    mlp = C * 4 * C + bias * 4 * C + 4 * C * C + bias * C
    block = 2 * layer_norm + attn + mlp
    return embeddings + cfg.n_layer * block + layer_norm


def saved_activation_bytes(cfg: ModelConfig, batch_size: int) -> int:
    """Rough float32 bytes the blocks keep for backward: about 16 floats per position per
    channel per layer (LayerNorm inputs and outputs, Q/K/V, attention output, the MLP's 4C
    hidden before and after GELU), counted with saved-tensor hooks on lal's config."""
    return 4 * cfg.n_layer * batch_size * cfg.block_size * cfg.n_embd * 16


def attention_weight_bytes(cfg: ModelConfig, batch_size: int) -> int:
    """Bytes of attention weights the blocks keep for backward with dropout on: each layer's
    softmax, dropout mask and dropped weights, (B, nh, T, T) float32 each, as attention with
    dropout runs unfused (counted with saved-tensor hooks). Without dropout the fused kernel
    keeps none of them. Medium at batch 16 keeps 3.2 GB of them, more than its (B, T, C)
    activations."""
    if cfg.dropout == 0:
        return 0
    return 12 * cfg.n_layer * batch_size * cfg.n_head * cfg.block_size**2


# Rows of the chunked loss at a time (lal_core/chunked_loss.py): 512 x 50,257 values is a
# 103 MB buffer in float32 (51 MB in bf16), reused every chunk and every step. 256 and 1,024
# rows trained tiny and small no faster (bf16, AMX Xeon; bench/README.md).
LOSS_CHUNK_ROWS = 512
# Without gradients (an eval) a chunk needs only its loss, and fewer rows keep more of it in
# the CPU's caches: 128 rows took tiny's eval loss 10-30% less time than 64 or 512 (bf16 and
# float32, AMX Xeon; bench/README.md).
EVAL_LOSS_CHUNK_ROWS = 128

# Above this, training recomputes each block's activations in backward instead of keeping
# them (off CUDA; see `lal_core.precision.default_recompute`).
RECOMPUTE_ABOVE_BYTES = 4 * 2**30


def activations_need_recompute(cfg: ModelConfig, batch_size: int) -> bool:
    """Whether the blocks' (B, T, C) activations would take more than RECOMPUTE_ABOVE_BYTES:
    where the engine recomputes them in backward instead (off CUDA), and what the memory
    estimate assumes. The attention weights dropout keeps are not counted here: with them,
    medium at batch 16 would recompute, 1.47x slower for 4 GB less (bf16, AMX Xeon: 6.7 s a
    step at 7.9 GB peak against 9.8 s at 3.9 GB)."""
    return saved_activation_bytes(cfg, batch_size) > RECOMPUTE_ABOVE_BYTES


def estimate_training_memory(cfg: ModelConfig, batch_size: int) -> int:
    """Rough peak bytes for training with the engine's CPU defaults, in float32, for
    `batch_size` sequences per forward pass (the micro batch, where gradients accumulate):
    - 20 bytes a parameter: weights, gradients, AdamW's two moments, the update's temporaries;
    - the activations the blocks keep for backward (attention weights with dropout
      included), or, past RECOMPUTE_ABOVE_BYTES, each block's input and one block's worth;
      and two blocks' worth while backward runs;
    - the chunked loss: a 512-row logits buffer, the head transposed, its gradient and the
      rows' gradients;
    - about 0.75 GB of runtime (torch itself, the corpus).
    It is an estimate, not a promise (checked against bench/run.py: bench/README.md).
    """
    C, V = cfg.n_embd, cfg.vocab_size
    tokens = batch_size * cfg.block_size
    kept = saved_activation_bytes(cfg, batch_size)
    one_block = kept // cfg.n_layer
    attention = attention_weight_bytes(cfg, batch_size)
    if activations_need_recompute(cfg, batch_size):
        kept = 4 * cfg.n_layer * tokens * C + one_block + attention // cfg.n_layer
    else:
        kept += attention
    loss = 4 * (LOSS_CHUNK_ROWS * V + 2 * V * C + tokens * C)
    return 20 * count_parameters(cfg) + kept + 2 * one_block + loss + 750_000_000


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


def _flag(default: Any, label: str, help: str) -> Any:
    """A recipe field with what `lal train --help` and the dashboard's Setup pane say of it."""
    return field(default=default, metadata={"label": label, "help": help})


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe (SPEC): AdamW, warmup + cosine, clipping, eval, early stopping.

    Each field is also a flag of `lal train` and `lal-tui` (`lal_core.flags`)."""

    batch_size: int = _flag(16, "batch size", "sequences per optimizer step")
    micro_batch: int = _flag(
        0,
        "micro batch",
        "sequences per forward pass, gradients accumulated over batch / micro passes; "
        "0: the whole batch",
    )
    max_iters: int = _flag(5000, "max iterations", "optimizer steps at most")
    lr: float = _flag(3e-4, "learning rate", "peak learning rate")
    min_lr: float = _flag(0.0, "min lr", "learning rate the cosine decays to")
    warmup_iters: int = _flag(100, "warmup", "steps of linear warmup")
    weight_decay: float = _flag(0.1, "weight decay", "AdamW weight decay on matrices")
    beta1: float = _flag(0.9, "beta1", "AdamW beta1")
    beta2: float = _flag(0.95, "beta2", "AdamW beta2")
    grad_clip: float = _flag(1.0, "grad clip", "global gradient-norm clip")
    eval_interval: int = _flag(
        0,
        "eval interval",
        f"steps between evals; 0: every {EVAL_EVERY_SEQUENCES:,} sequences trained "
        f"({EVAL_EVERY_SEQUENCES // 16} steps at batch 16, the recipe's)",
    )
    eval_tokens: int = _flag(
        40_000,
        "eval tokens",
        "val tokens an eval scores at most: a larger val split is scored on windows spread "
        "evenly over it, the same ones every eval; 0: all of it",
    )
    patience: int = _flag(4, "patience (evals)", "evals without a new best before early stop")
    seed: int = _flag(1337, "seed", "random seed (weights, batches, dropout)")

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
        data = {"eval_tokens": 0, **data}  # a run from before eval_tokens scored all of val
        return cls(**{k: v for k, v in data.items() if k in known}).validate()
