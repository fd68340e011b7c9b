"""The model's shape: `ModelConfig`, the four named configs, and the parameter count.

A config is a small frozen dataclass; `validate()` raises `ConfigError` with one line that names
the bad value, so the CLI and the dashboard can show it as it is. The shapes are the original
write-up's (docs/recipe.md, The model).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
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
    bias: bool = False  # no biases in Linear and LayerNorm (docs/recipe.md, The model)
    # Dropout on the attention's output projection too, before the residual add, as nanoGPT
    # has it; the write-up (and lal's runs so far) drop only attention weights, the MLP's
    # output and the embeddings. A run.json without the key is such a run.
    attn_proj_dropout: bool = False

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


# The named configs train with dropout, not the original write-up's 0 (docs/recipe.md, Where
# lal departs from it), each at the rate measured best for it (TinyShakespeare, CPU, to early
# stop or max-iters, seed 1337; README.md, Training). Tiny: best val 4.7713 @ 3000 without
# dropout, 4.7275 @ 5000 with 0.1, 4.7527 @ 5000 with 0.2. Small: 4.7039 @ 1000 with 0.1,
# 4.6705 @ 1250 with 0.2. Medium and lal, not measured yet, keep 0.1. `--dropout 0` (or
# `--writeup`) is the write-up's regime.
CONFIG_DROPOUT = {"tiny": 0.1, "small": 0.2, "medium": 0.1, "lal": 0.1}

MODEL_CONFIGS: dict[str, ModelConfig] = {
    "tiny": ModelConfig("tiny", n_layer=4, n_head=4, n_embd=128, block_size=128),
    "small": ModelConfig("small", n_layer=6, n_head=6, n_embd=384, block_size=256),
    "medium": ModelConfig("medium", n_layer=8, n_head=8, n_embd=512, block_size=512),
    "lal": ModelConfig("lal", n_layer=12, n_head=12, n_embd=768, block_size=512),
}
MODEL_CONFIGS = {
    name: replace(c, dropout=CONFIG_DROPOUT[name]) for name, c in MODEL_CONFIGS.items()
}


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
