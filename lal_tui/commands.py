"""The dashboard's entries in the command palette (ctrl+p), beside Textual's own (themes...)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from textual.app import SystemCommand

from lal_tui.panes.train import TrainPane

PANES = ("setup", "train", "sample", "sft", "runs")


def dashboard_commands(
    train: Callable[[], object],
    stop: Callable[[], object],
    show_pane: Callable[[str], object],
    show_help: Callable[[], object],
    train_pane: TrainPane,
) -> Iterable[SystemCommand]:
    """The app's actions (train, stop, a pane, help) and the Train pane's toggles."""
    yield SystemCommand("Start training", "Train with the Setup pane's settings", train)
    yield SystemCommand("Stop", "Stop the run or generation in this pane", stop)
    for name in PANES:
        yield SystemCommand(
            f"Show {name}", f"Switch to the {name} pane", lambda n=name: show_pane(n)
        )
    yield SystemCommand(
        "Toggle smoothing", "Smooth the step-loss line (EMA)", train_pane.action_toggle_smoothing
    )
    yield SystemCommand("Toggle log scale", "Log-scale loss axis", train_pane.action_toggle_log)
    yield SystemCommand(
        "Toggle writing plot",
        "Plot the loss, or the writing figures of the samples drawn after each eval",
        train_pane.action_toggle_writing,
    )
    yield SystemCommand("Help", "Keys, by pane", show_help)
