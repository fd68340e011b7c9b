"""`lal train --nproc N`: the framework's own launcher, started from lal itself.

It runs `lal train` (the same flags, less --nproc) as N ranks on this machine, waits, and says
in one line how the run ended, from its run.json. The torch backend's ranks are started by
torchrun's launcher (`torch.distributed.launcher.api.elastic_launch`, what `torchrun
--standalone --nproc-per-node N` runs); the MLX backend's by `mlx.launch` (its ring backend on
127.0.0.1), in a process group of their own that this process passes Ctrl-C to.

- Ctrl-C reaches this process; torchrun passes it on to every rank, the ranks agree to stop
  at the same step, rank 0 saves once, and this exits 130 (`stopped`);
- a rank that dies makes torchrun stop the others; the run reads as interrupted, resumable
  from its last eval, and this exits 1 with that line.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from lal_core.cli.console import EXIT_ERROR, EXIT_INTERRUPTED
from lal_core.errors import LalError
from lal_core.runs.folder import find_run, new_run_id, read_entry, runs_root

if TYPE_CHECKING:
    from lal_core.training.request import RunRequest

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


def launch_ranks(args: argparse.Namespace, request: RunRequest | None) -> int:
    """Run `lal train` with these arguments, less --nproc, as `args.nproc` ranks here (of the
    new run `request` asks for, or of the run `args.resume` names); the exit status for `lal
    train --nproc`. A new run is named here, to read its run.json at the end."""
    runs_dir = Path(args.runs_dir) if args.runs_dir else None
    argv, run_id = without_nproc(args.argv), args.run_id
    if request is None:
        record = find_run(args.resume, runs_dir).read()
        backend, config = record.backend, record.model_config.name
    else:  # what the ranks would each refuse, said once
        request.train_config.micro_per_rank(args.nproc)
        backend, config = request.backend, request.model_config.name
        if run_id is None:
            run_id = new_run_id(config, backend, runs_root(runs_dir))
            argv += ["--run-id", run_id]
    command = [sys.executable, "-m", "lal_core.cli", "train", *argv]
    os.environ[LAUNCHED] = "1"  # the ranks leave a lost rank for this process to say
    launch = _mlx_launch if backend == "mlx" else _torchrun
    return _ending(args.resume or run_id, runs_dir, launch(command, args.nproc))


def _torchrun(command: list[str], nproc: int) -> str:
    """Run `command` as `nproc` torch ranks; what went wrong ('' if nothing did)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # torchrun's own choice: the cores shared among the ranks, not each rank taking them all.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
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
    try:
        elastic_launch(config, command[0])(*command[1:])
    except SignalException as exc:
        return f"stopped by {exc.sigval.name}"
    except ChildFailedError as exc:
        rank, first = exc.get_first_failure()
        return f"rank {rank} exited with {_exit_said(first.exitcode)}"
    return ""


# How long the other MLX ranks get to go down after one has died: a rank blocked in a ring
# collective whose peer is gone may never return (seen with MLX's Linux CPU wheel), and then
# neither does mlx.launch, which waits for it.
MLX_GRACE_SECONDS = 15.0


def _mlx_launch(command: list[str], nproc: int) -> str:
    """Run `command` as `nproc` MLX ranks (mlx.launch, ring backend, this machine), in a process
    group of their own; what went wrong ('' if nothing did). Its output is passed through, and
    read for mlx.launch's word that a rank died: the group is killed if it lingers after."""
    launcher = Path(sys.executable).with_name("mlx.launch")
    head = [str(launcher)] if launcher.is_file() else [sys.executable, "-m", "mlx.launch"]
    ring = ["--hosts", "127.0.0.1", "-n", str(nproc), "--backend", "ring", "--"]
    child = subprocess.Popen(
        [*head, *ring, *command], start_new_session=True, stderr=subprocess.PIPE
    )
    died: list[str] = []  # mlx.launch's lines about a rank that exited badly

    def relay() -> None:
        for raw in child.stderr:
            line = raw.decode(errors="replace")
            said = re.search(r"rank \d+ (exited with code -?\d+|was killed)", line)
            if said and "code 0" not in said.group(0):
                died.append(said.group(0))
            sys.stderr.write(line)
            sys.stderr.flush()

    threading.Thread(target=relay, daemon=True).start()
    stopped, deadline = False, None
    while True:
        try:
            code = child.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            if died and deadline is None:
                deadline = time.monotonic() + MLX_GRACE_SECONDS
            if deadline is not None and time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
        except KeyboardInterrupt:  # pass Ctrl-C on to every rank (they stop and save)
            stopped = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGINT)
    if stopped:
        return "stopped by SIGINT"
    if died:
        return died[0]
    return "" if code == 0 else f"a rank exited with {_exit_said(code)}"


def _exit_said(code: int) -> str:
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"status {code}"


def _ending(ref: str | None, runs_dir: Path | None, failure: str) -> int:
    """The exit status, from how run.json says the run ended (ranks print their own lines)."""
    try:
        run = find_run(str(ref), runs_dir)
    except LalError:  # no run folder: the ranks refused to start, and said why
        return EXIT_ERROR
    entry = read_entry(run)
    deadline = time.monotonic() + 10.0
    while entry.status == "running" and time.monotonic() < deadline:
        time.sleep(0.2)  # a rank killed a moment ago may still hold the run's lock
        entry = read_entry(run)
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
