"""`lal eval`: how good a checkpoint is, as loss and perplexity on held-out text."""

from __future__ import annotations

import argparse

from lal_core.flags import add_checkpoint_flags, positive_int


def add_parsers(sub, backends) -> None:
    e = sub.add_parser("eval", help="a checkpoint's loss and perplexity on its val split or a text")
    add_checkpoint_flags(e)
    e.add_argument(
        "--data",
        default=None,
        metavar="PATH",
        help="score the whole of this text instead of the run's val split "
        "(needed for a checkpoint outside a run folder)",
    )
    e.add_argument("--backend", default=None, choices=list(backends), help="default: the run's")
    e.add_argument("--device", default=None)
    e.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="windows per forward pass (default: the run's batch size, 16 outside a run)",
    )


def cmd_eval(args: argparse.Namespace) -> int:
    from lal_core.evaluation import score
    from lal_core.runs import resolve_checkpoint

    checkpoint = resolve_checkpoint(args.run, args.checkpoint, args.runs_dir)
    result = score(checkpoint, args.data, args.backend, args.device, args.batch_size)
    print(result.line(), flush=True)
    return 0
