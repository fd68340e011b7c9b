"""SIGTERM (`kill`) and SIGHUP (a closed terminal) while the dashboard runs: the dashboard ends,
the runs go on.

The dashboard is a viewer: each run it started is a process in a session of its own
(`lal_tui.work.launching`), which neither signal reaches, and which nothing here stops. Both
signals stop the app's jobs (following, sampling) and end the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable

from lal_tui.work.jobs import JobRunner


def install(jobs: JobRunner, end: Callable[[], None]) -> None:
    """Handle both signals on the running event loop: SIGTERM ends the app with `end` (what `q`
    does when nothing asks first), SIGHUP leaves at once."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, hang_up, jobs)
        loop.add_signal_handler(signal.SIGTERM, terminate, jobs, end)


def terminate(jobs: JobRunner, end: Callable[[], None]) -> None:
    """SIGTERM: stop following, end the app; the runs go on."""
    jobs.stop_all("SIGTERM")
    end()


def hang_up(jobs: JobRunner, leave: Callable[[int], object] = os._exit) -> None:
    """SIGHUP: the terminal is gone (a dropped SSH link). Stop following and leave at once:
    Textual cannot shut down cleanly writing to a terminal that no longer exists (it blocks on
    the dead tty). The runs go on; nothing of theirs lives in this process."""
    jobs.stop_all("SIGHUP")
    leave(128 + signal.SIGHUP)
