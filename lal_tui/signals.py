"""SIGTERM (`kill`) and SIGHUP (a closed terminal) while the dashboard runs: the run stops
after its step and saves its checkpoints and metrics before the process goes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lal_tui.app import LalApp


def install(app: LalApp) -> None:
    """Handle both signals on the app's event loop (call it from the running app)."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, hang_up, app)
        loop.add_signal_handler(signal.SIGTERM, terminate, app)


def terminate(app: LalApp) -> None:
    """SIGTERM: stop the run after its step, let it save, then quit as `q` would."""
    app.quit_pending = True
    app.jobs.stop_all("SIGTERM")
    app.maybe_quit()


def hang_up(app: LalApp) -> None:
    """SIGHUP: the terminal is gone (a dropped SSH link without tmux). Stop the run after its
    step and, once the job has saved it, leave at once: Textual cannot shut down cleanly
    writing to a terminal that no longer exists (it blocks on the dead tty)."""
    app.jobs.stop_all("SIGHUP")

    def exit_when_saved() -> None:
        app.jobs.idle.wait()
        os._exit(128 + signal.SIGHUP)

    threading.Thread(target=exit_when_saved, daemon=True).start()
