"""`lal-tui`'s flags: the engine's run flags (`lal_core.flags`, shared with `lal train`) and the
dashboard's own two, --train and --theme."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from lal_core.errors import LalError
from lal_core.flags import add_run_flags, run_request
from lal_tui.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lal-tui",
        description="The lal dashboard: configure, train, watch, sample and fine-tune a small "
        "GPT from one terminal. Keys: 1-5 panes, t train, x stop, ? help, q quit.",
        epilog="Over SSH, run it in tmux so a dropped link does not end a run: "
        "tmux new -s lal 'uv run lal-tui --config tiny --train'",
    )
    add_run_flags(parser)
    own = parser.add_argument_group("dashboard")
    own.add_argument(
        "--train", action="store_true", help="start training at once with the given settings"
    )
    own.add_argument(
        "--theme",
        default=None,
        help="Textual theme, e.g. textual-dark, nord, gruvbox, "
        "ansi-dark for 16-colour terminals (ctrl+p changes it too)",
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings the parsed flags ask for; a bad value is a one-line LalError."""
    return Settings(request=run_request(args), train_now=args.train, theme=args.theme)


def parse_settings(argv: Sequence[str] | None, themes: Sequence[str] = ()) -> Settings:
    """Settings from a command line; a bad flag or value, or a theme not in `themes`, exits 2
    with one line, as argparse does."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except LalError as exc:
        parser.error(str(exc))
    if args.theme and themes and args.theme not in themes:
        parser.error(f"unknown theme {args.theme!r}; choose one of: " + ", ".join(sorted(themes)))
    return settings
