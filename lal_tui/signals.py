"""SIGTERM (`kill`) and SIGHUP (a closed terminal) while the dashboard runs: the run stops
after its step and saves its checkpoints and metrics before the process goes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Callable

from lal_tui.jobs import JobRunner


def install(jobs: JobRunner, quit_after_saving: Callable[[], None]) -> None:
    """Handle both signals on the running event loop: SIGTERM stops the jobs and calls
    `quit_after_saving` (what `q` does once the run has saved); SIGHUP stops them and leaves
    as soon as they have saved."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, hang_up, jobs)
        loop.add_signal_handler(signal.SIGTERM, terminate, jobs, quit_after_saving)


def terminate(jobs: JobRunner, quit_after_saving: Callable[[], None]) -> None:
    """SIGTERM: stop the run after its step, let it save, then quit as `q` would."""
    jobs.stop_all("SIGTERM")
    quit_after_saving()


def hang_up(jobs: JobRunner) -> None:
    """SIGHUP: the terminal is gone (a dropped SSH link without tmux). Stop the run after its
    step and, once the job has saved it, leave at once: Textual cannot shut down cleanly
    writing to a terminal that no longer exists (it blocks on the dead tty)."""
    jobs.stop_all("SIGHUP")

    def exit_when_saved() -> None:
        jobs.idle.wait()
        os._exit(128 + signal.SIGHUP)

    threading.Thread(target=exit_when_saved, daemon=True).start()
