"""`lal track`: runs sent to TensorBoard and Weights & Biases from their folders, after the fact
or while they run; and `--report-to`, which `lal train` and `lal sft` take to do it live."""

from __future__ import annotations

import argparse
import sys

from lal_core.errors import LalError
from lal_core.trackers import TRACKERS

JOBS = ("train", "sft")


def add_report_flag(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """`--report-to`: optional for `lal train` and `lal sft` (live), required by `lal track`."""
    parser.add_argument(
        "--report-to",
        nargs="+",
        choices=TRACKERS,
        default=[],
        required=required,
        metavar="TRACKER",
        help="send the run to experiment trackers: tensorboard (event files in the run folder), "
        "wandb (offline without an account; wandb sync sends it later); each an extra: "
        "uv sync --extra tensorboard --extra wandb",
    )


def add_parsers(sub) -> None:
    t = sub.add_parser(
        "track", help="send runs to TensorBoard or Weights & Biases from their folders"
    )
    t.add_argument("runs", nargs="*", metavar="RUN", help="run ids or folders (default: newest)")
    add_report_flag(t, required=True)
    t.add_argument(
        "--job",
        choices=JOBS,
        default=None,
        help="only its training or only its fine-tuning (default: each that it has)",
    )
    t.add_argument("--nice", action="store_true", help=argparse.SUPPRESS)  # a live run's tracker
    t.add_argument("--runs-dir", default=None)
    t.set_defaults(handler=cmd_track)


def cmd_track(args: argparse.Namespace) -> int:
    from lal_core.runs.folder import find_runs
    from lal_core.trackers.send import check_installed, lower_priority, open_tracker, send

    check_installed(args.report_to)
    if args.nice:
        lower_priority()
    for run in find_runs(args.runs, args.runs_dir):
        jobs = [args.job] if args.job else [j for j in JOBS if run.event_log(j).is_file()]
        if not jobs:
            raise LalError(f"run {run.run_id} has no event log to send (a run from an older lal?)")
        for job in jobs:
            for name in args.report_to:
                sent = send(run, job, open_tracker(name, run, job))
                if not sent.line:
                    print(f"{name}: run {run.run_id} logged no {job} run to send", file=sys.stderr)
                    continue
                print(f"{sent.line}; {sent.steps} steps, {sent.evals} evals", flush=True)
    return 0
