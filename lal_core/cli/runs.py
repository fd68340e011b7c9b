"""`lal runs`, `lal watch` and `lal stop`: the runs in a folder, and the live ones.

A run is its folder and at most one process writing it; these commands only read the folder
(`lal stop` writes the run's stop file, which its process watches), so they work the same on a
run started by `lal train`, by the dashboard, or before this terminal was opened.
"""

from __future__ import annotations

import argparse
import time

from lal_core.cli.console import Printer
from lal_core.errors import LalError

NEWEST_LIVE = "run id or folder (default: the newest live run)"


def add_parsers(sub) -> None:
    r = sub.add_parser("runs", help="list past runs")
    r.add_argument("--runs-dir", default=None)
    r.set_defaults(handler=cmd_runs)

    w = sub.add_parser("watch", help="print a run's log as it goes, until it ends")
    w.add_argument("run", nargs="?", default=None, help=NEWEST_LIVE)
    w.add_argument("--sft", action="store_true", help="its fine-tuning, not its training")
    w.add_argument(
        "--no-samples", action="store_true", help="leave out the samples drawn after each eval"
    )
    w.add_argument("--runs-dir", default=None)
    w.set_defaults(handler=cmd_watch)

    s = sub.add_parser("stop", help="ask a running run to stop after its step and save")
    s.add_argument("run", nargs="?", default=None, help=NEWEST_LIVE)
    s.add_argument("--no-wait", action="store_true", help="return at once, not when it has stopped")
    s.add_argument("--runs-dir", default=None)
    s.set_defaults(handler=cmd_stop)


def cmd_runs(args: argparse.Namespace) -> int:
    from lal_core.runs.folder import list_runs

    runs = list_runs(args.runs_dir)
    if not runs:
        print("no runs yet; start one with: lal train --config tiny")
        return 0
    heads = ("run", "config", "backend", "best val", "bpb", "@iter", "iters")
    print("{:<34} {:<7} {:<8} {:>8} {:>6} {:>6} {:>6}  status".format(*heads))
    for r in runs:
        if r.damaged:
            blank = "{:<34} {:<7} {:<8} {:>8} {:>6} {:>6} {:>6}".format(r.run_id, *"??-----")
            print(f"{blank}  damaged: {r.error}")
            continue
        best = f"{r.best_val:.4f}" if r.best_val is not None else "-"
        # bits per byte: only runs from a lal that records it (an older run's is unknown)
        bpb = r.record.best_bpb if r.record is not None else None
        bpb_text = f"{bpb:.3f}" if bpb is not None and r.best_val is not None else "-"
        at = str(r.best_iter) if r.best_iter is not None else "-"
        status = r.status
        if r.writer is not None and r.writer.job == "sft":
            status += ", fine-tuning now"
        print(
            f"{r.run_id:<34} {r.config:<7} {r.backend:<8} {best:>8} {bpb_text:>6} {at:>6} "
            f"{r.iteration:>6}  "
            f"{status}"
        )
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from lal_core.runs.follow import RunFollower, live_run

    run = live_run(args.run, args.runs_dir)
    with Printer(failures=True, samples=not args.no_samples) as printer:
        for event in RunFollower(run, "sft" if args.sft else "train").events():
            printer(event)
    if not printer.printed:
        what = "fine-tuning" if args.sft else "training"
        print(f"run {run.run_id} has no {what} events logged (a run from an older lal?)")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from lal_core.runs.folder import read_entry
    from lal_core.runs.follow import live_run
    from lal_core.runs.lock import remote_host

    run = live_run(args.run, args.runs_dir)
    entry = read_entry(run)
    writer = entry.writer
    if writer is None:  # run.json may say it runs on a host this one cannot see into
        host = remote_host(entry.record) if entry.record is not None else None
    else:
        host = None if writer.here else writer.host
    if host is not None:
        raise LalError(
            f"run {run.run_id} runs on {host}: follow it from here (lal watch "
            f"{run.run_id}), stop it there"
        )
    if writer is None:
        raise LalError(f"run {run.run_id} is not running ({entry.status}); nothing to stop")
    run.request_stop("lal stop")
    print(f"asked run {run.run_id}, {writer.describe()}, to stop after its step", flush=True)
    if args.no_wait:
        return 0
    while run.writer() is not None:
        time.sleep(0.2)
    done = read_entry(run)
    print(f"run {run.run_id} is {done.status} at iter {done.iteration}", flush=True)
    return 0
