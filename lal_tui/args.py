"""`lal-tui`'s flags: the engine's run flags (`lal_core.flags`, shared with `lal train`) and the
dashboard's own, --train, --attach and --theme."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from lal_core.cli.console import EXIT_USAGE, OneLineParser
from lal_core.cli.flags import add_run_flags, run_request
from lal_core.errors import LalError
from lal_core.runs.follow import live_run
from lal_tui.settings import Settings


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
