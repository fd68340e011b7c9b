"""`lal train`: a new run, or `--resume` of a stopped one; `--nproc N` trains it on N ranks
here (`lal_core.cli.ranks`)."""

from __future__ import annotations

import argparse
import sys

from lal_core.cli.console import EXIT_ERROR, EXIT_INTERRUPTED, Printer, StopOnSignals
from lal_core.cli.flags import add_run_flags, positive_int
from lal_core.cli.track import add_report_flag
from lal_core.errors import LalError


def add_parsers(sub) -> None:
    t = sub.add_parser("train", help="train a model, with early stopping and checkpoints")
    add_run_flags(t)
    t.add_argument(
        "--resume",
        default=None,
        metavar="RUN",
        help="continue a stopped or interrupted run from its last saved state "
        "(with its own settings; only --max-iters, --micro-batch, --nproc and --device may "
        "change)",
    )
    t.add_argument(
        "--nproc",
        type=positive_int,
        default=None,
        metavar="N",
        help="train on N ranks here, data parallel (torch: torchrun's standalone mode; mlx: "
        "mlx.launch): each computes batch / N sequences of every step",
    )
    t.add_argument(
        "--run-id",
        default=None,
        help="name the new run's folder (default: date, config and backend); the dashboard "
        "names it first to send the run's console output there",
    )
    add_report_flag(t)
    t.set_defaults(handler=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from lal_core.backends import distributed
    from lal_core.cli.flags import fixed_by_resume, run_request
    from lal_core.runs.events import StopRequest, chain
    from lal_core.trackers.send import LiveTrackers, check_installed
    from lal_core.training.train import Trainer

    check_installed(args.report_to)
    request = None
    if args.resume:
        given = fixed_by_resume(args)
        if given:
            raise LalError(
                f"--resume continues a run with its own settings; drop {', '.join(given)}"
            )
    else:
        request = run_request(args)  # checked before any rank starts
    if args.nproc and args.nproc > 1 and not distributed.under_a_launcher():
        from lal_core.cli.ranks import launch_ranks

        return launch_ranks(args, request)
    stop = StopRequest()
    trackers = LiveTrackers(args.report_to, "train")
    # One process, or a rank under a launcher; the printer takes its progress line away at the end.
    with distributed.joined(args.device) as ranks, Printer() as printer:
        on_event = chain(printer, trackers) if ranks.main else None
        told = {"on_event": on_event, "stop": stop, "ranks": ranks}
        if request is None:
            changes = {"max_iters": args.max_iters, "micro_batch": args.micro_batch}
            trainer = Trainer.resume(
                args.resume, runs_dir=args.runs_dir, device=args.device, **changes, **told
            )
        else:
            trainer = Trainer(request, run_id=args.run_id, **told)
        with StopOnSignals(stop):
            result = trainer.run_training()
    if not ranks.main:  # rank 0 speaks for the run
        return EXIT_INTERRUPTED if result.status == "stopped" else 0
    code = 0
    if result.status == "failed":
        print(f"lal: error: {result.message}", file=sys.stderr)
        code = EXIT_ERROR
    elif result.status == "stopped":
        print(
            f"stopped ({stop.reason}) at iter {result.iteration}; checkpoints and metrics are "
            f"saved; resume with: lal train --resume {result.run_dir.name}",
            flush=True,
        )
        code = EXIT_INTERRUPTED
    for line in trackers.report():  # after the run: they may still be sending its end
        print(line, flush=True)
    return code
