"""What the dashboard trains with: the engine's RunRequest, the configs offered, the theme.

`lal-tui` builds one from its flags (`lal_tui.args`), tests build one with a micro model and a
small corpus. The request is the engine's own (`lal_core.flags`), so `t` starts a Trainer with
exactly the flags given, backend switches included. Settings are frozen: the app owns them and
replaces them when the Setup pane reports an edit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lal_core.cli.flags import DEFAULT_CONFIG
from lal_core.model.config import MODEL_CONFIGS, ModelConfig
from lal_core.training.request import RunRequest


@dataclass(frozen=True)
class Settings:
    request: RunRequest = field(
        default_factory=lambda: RunRequest(model_config=MODEL_CONFIGS[DEFAULT_CONFIG])
    )
    model_configs: Mapping[str, ModelConfig] = field(default_factory=lambda: dict(MODEL_CONFIGS))
    train_now: bool = False  # `--train`: start at once
    attach: Path | None = None  # `--attach`: the run folder to follow in the Train pane at once
    theme: str | None = None

    def __post_init__(self) -> None:
        # the requested config is always one the Setup pane offers
        chosen = self.request.model_config
        if chosen.name not in self.model_configs:
            configs = {**self.model_configs, chosen.name: chosen}
            object.__setattr__(self, "model_configs", configs)

    @property
    def config(self) -> str:
        """The chosen model config's name."""
        return self.request.model_config.name

    @property
    def runs_dir(self) -> Path | None:
        return self.request.runs_dir

    def choose(self, config: str, dropout: float, **request: Any) -> Settings:
        """A model config offered, with this dropout, and other RunRequest fields changed
        (train_config, backend, device, data...); raises ConfigError for a bad value."""
        model = replace(self.model_configs[config], dropout=dropout).validate()
        return replace(self, request=replace(self.request, model_config=model, **request))

    def with_data(self, data: str | None) -> Settings:
        return replace(self, request=replace(self.request, data=data))
