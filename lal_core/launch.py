"""`lal train --nproc N`: torchrun's standalone mode, started from lal itself.

It runs `lal train` (the same flags, less --nproc) as N ranks on this machine through torchrun's
own launcher (`torch.distributed.launcher.api.elastic_launch`, what `torchrun --standalone
--nproc-per-node N` runs), waits, and says in one line how the run ended, from its run.json:

- Ctrl-C reaches this process; torchrun passes it on to every rank, the ranks agree to stop
  at the same step, rank 0 saves once, and this exits 130 (`stopped`);
- a rank that dies makes torchrun stop the others; the run reads as interrupted, resumable
  from its last eval, and this exits 1 with that line.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from pathlib import Path

from lal_core.console import EXIT_ERROR, EXIT_INTERRUPTED
from lal_core.errors import LalError
from lal_core.runs import find_run, new_run_id, read_entry

LAUNCHED = "LAL_RANKS_LAUNCHED"  # set for ranks started by `lal train --nproc`


def without_nproc(argv: list[str]) -> list[str]:
    """The `lal train` arguments with --nproc (and its value) taken out."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def launch_ranks(
    argv: list[str],
    nproc: int,
    run_id: str | None,
    resume: str | None,
    runs_root: Path | None,
    names: tuple[str, str] | None = None,
) -> int:
    """Run `lal train ARGV` as `nproc` ranks here; the exit status for `lal train --nproc`.
    A new run is named here (from `names`: its config and backend), to read its run.json at
    the end."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    args = without_nproc(argv)
    if resume is None and run_id is None and names is not None:  # to read its run.json after
        run_id = new_run_id(*names, _root(runs_root))
        args += ["--run-id", run_id]
    # torchrun's own choice: the cores shared among the ranks, not each rank taking them all.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    os.environ[LAUNCHED] = "1"  # the ranks leave a lost rank for this process to say
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.1,  # a dead rank is seen within this, and the others stopped
    )
    failure = ""
    try:
        elastic_launch(config, sys.executable)("-m", "lal_core.cli", "train", *args)
    except SignalException as exc:
        failure = f"stopped by {exc.sigval.name}"
    except ChildFailedError as exc:
        rank, first = exc.get_first_failure()
        failure = f"rank {rank} exited with {_exit_said(first.exitcode)}"
    return _ending(resume or run_id, runs_root, failure)


def _exit_said(code: int) -> str:
    if code < 0:
        import signal

        return f"signal {signal.Signals(-code).name}"
    return f"status {code}"


def _ending(ref: str | None, runs_root: Path | None, failure: str) -> int:
    """The exit status, from how run.json says the run ended (ranks print their own lines)."""
    try:
        entry = read_entry(find_run(str(ref), runs_root))
    except LalError:  # no run folder: the ranks refused to start, and said why
        return EXIT_ERROR
    if entry.status == "stopped":
        return EXIT_INTERRUPTED
    if entry.status in ("completed", "early_stopped"):
        return 0
    if entry.status == "interrupted":
        print(
            f"lal: error: {failure or 'a rank stopped'}; run {entry.run_id} is interrupted, "
            f"resume it from its last eval with: lal train --resume {entry.run_id}",
            file=sys.stderr,
        )
    return EXIT_ERROR


def _root(runs_root: Path | None) -> Path:
    from lal_core import paths

    return Path(runs_root) if runs_root is not None else paths.runs_dir()
