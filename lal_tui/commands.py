"""The dashboard's entries in the command palette (ctrl+p), beside Textual's own (themes...)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from textual.app import SystemCommand

from lal_tui.panes.train import TrainPane

if TYPE_CHECKING:
    from lal_tui.app import LalApp

PANES = ("setup", "train", "sample", "sft", "runs")


def dashboard_commands(app: LalApp) -> Iterable[SystemCommand]:
    yield SystemCommand("Start training", "Train with the Setup pane's settings", app.action_train)
    yield SystemCommand("Stop", "Stop the run or generation in this pane", app.action_stop)
    for name in PANES:
        yield SystemCommand(
            f"Show {name}", f"Switch to the {name} pane", lambda n=name: app.action_show_pane(n)
        )
    train = app.query_one(TrainPane)
    yield SystemCommand(
        "Toggle smoothing", "Smooth the step-loss line (EMA)", train.action_toggle_smoothing
    )
    yield SystemCommand("Toggle log scale", "Log-scale loss axis", train.action_toggle_log)
    yield SystemCommand("Help", "Keys, by pane", app.action_help)
