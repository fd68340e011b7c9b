"""What the dashboard trains with, from its flags: the engine's RunRequest, the configs
offered, the run to attach to, the theme.

`lal-tui` builds one from its flags (`parse_settings`): the engine's run flags
(`lal_core.cli.flags`, shared with `lal train`) and the dashboard's own, --train, --attach and
--theme. Tests build one with a micro model and a small corpus. The request is the engine's
own, so `t` starts a run with exactly the flags given, backend switches included. Settings are
frozen: the app owns them and replaces them when the Setup pane reports an edit.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lal_core.cli.console import EXIT_USAGE, OneLineParser
from lal_core.cli.flags import DEFAULT_CONFIG, add_run_flags, run_request
from lal_core.errors import LalError
from lal_core.model.config import MODEL_CONFIGS, ModelConfig
from lal_core.runs.follow import live_run
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


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="lal-tui",
        description="The lal dashboard: configure, train, watch, sample and fine-tune a small "
        "GPT from one terminal. Keys: 1-5 panes, t train, x stop, ? help, q quit.",
        epilog="A run started here is a process of its own: quit, close the terminal or lose "
        "the SSH link and it goes on; follow it again with: lal-tui --attach",
    )
    add_run_flags(parser)
    own = parser.add_argument_group("dashboard")
    own.add_argument(
        "--train", action="store_true", help="start training at once with the given settings"
    )
    own.add_argument(
        "--attach",
        nargs="?",
        const="",
        default=None,
        metavar="RUN",
        help="follow a run in the Train pane: RUN (id or folder; a finished one shows its "
        "history), or without RUN the newest live run",
    )
    own.add_argument(
        "--theme",
        default=None,
        help="Textual theme, e.g. textual-dark, nord, gruvbox, "
        "ansi-dark for 16-colour terminals (ctrl+p changes it too)",
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings the parsed flags ask for; a bad value, or a run to attach to that is not
    there, is a one-line LalError."""
    request = run_request(args)
    attach = None
    if args.attach is not None:
        if args.train:
            raise LalError("--train starts a new run, --attach follows one: choose one")
        attach = live_run(args.attach or None, request.runs_dir).path
    return Settings(request=request, train_now=args.train, attach=attach, theme=args.theme)


def parse_settings(argv: Sequence[str] | None, themes: Sequence[str] = ()) -> Settings:
    """Settings from a command line; a bad flag or value, a run to attach to that is not there,
    or a theme not in `themes`, exits 2 with one line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except LalError as exc:  # one line, as `lal` says it
        parser.exit(EXIT_USAGE, f"lal-tui: error: {exc}\n")
    if args.theme and themes and args.theme not in themes:
        parser.error(f"unknown theme {args.theme!r}; choose one of: " + ", ".join(sorted(themes)))
    return settings
