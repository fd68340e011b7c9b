"""What the dashboard starts with: config, training recipe, data, backend, runs folder.

`lal-tui` builds one from its flags; tests build one with a micro model and a small corpus.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from lal_core.config import MODEL_CONFIGS, ModelConfig, TrainConfig


@dataclass
class Settings:
    config: str = "tiny"
    model_configs: dict[str, ModelConfig] = field(default_factory=lambda: dict(MODEL_CONFIGS))
    train: TrainConfig = field(default_factory=TrainConfig)
    dropout: float = 0.0
    data: str | None = None
    backend: str = "torch"
    device: str | None = None
    runs_dir: Path | None = None
    train_now: bool = False
    theme: str | None = None

    def model_config(self, name: str | None = None) -> ModelConfig:
        cfg = self.model_configs[name or self.config]
        return replace(cfg, dropout=self.dropout).validate()
