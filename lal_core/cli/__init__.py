"""The headless command line, `lal`: one module per group of commands, over the engine's API.

    train.py    lal train (and ranks.py: `--nproc N`, started with the framework's launcher)
    sample.py   lal sample
    runs.py     lal runs, lal watch, lal stop
    sft.py      lal sft, lal chat
    quality.py  lal eval, lal report
    export.py   lal export, lal plot
    track.py    lal track (and --report-to): runs in TensorBoard and Weights & Biases
    prepare.py  lal prepare
    flags.py    the flags several commands share (a run's, a checkpoint's, sampling's)
    console.py  what a command prints while a run goes, signals, exit statuses

Each module adds its commands' parsers (`add_parsers`) and names the function that runs each.
Every user error ends as one line on stderr (`lal: error: ...`) and a non-zero exit status:
2 for bad flags, 1 for anything else. Ctrl-C (or SIGTERM / SIGHUP, or `lal stop`) during
training finishes the step in progress, saves the final checkpoint and exits 130; a second
Ctrl-C exits at once. This package may import every other package of lal_core; none imports it
(the dashboard takes its flags and console parts).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from lal_core.cli import export, prepare, quality, runs, sample, sft, track, train
from lal_core.cli.console import EXIT_ERROR, EXIT_INTERRUPTED, OneLineParser
from lal_core.cli.ranks import LAUNCHED
from lal_core.errors import LalError, RankLost

GROUPS = (train, sample, runs, sft, export, track, quality, prepare)  # in `lal --help`'s order


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="lal", description="Train, watch and talk to a small GPT.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for group in GROUPS:
        group.add_parsers(sub)  # each parser names its command's function: `handler`
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv[1:]  # the command's own arguments (`lal train --nproc` passes them on)
    try:
        return args.handler(args)
    except LalError as exc:
        # Under `lal train --nproc`, rank 0 speaks for the ranks, and the launcher says which
        # rank was lost; a bare torchrun's ranks each say it.
        launched = bool(os.environ.get(LAUNCHED))
        if not (launched and (isinstance(exc, RankLost) or _other_launched_rank())):
            print(f"lal: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("lal: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `lal sample | head` closed the pipe: not an error
        sys.stderr.close()
        return 0
    except OSError as exc:  # the environment: a full disk, a folder without permission, ...
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"lal: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_ERROR


def _other_launched_rank() -> bool:
    """A rank other than 0 (torchrun's RANK, mlx.launch's MLX_RANK)."""
    return (os.environ.get("RANK") or os.environ.get("MLX_RANK") or "0") != "0"
