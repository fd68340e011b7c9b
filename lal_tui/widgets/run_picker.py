"""A Select of run folders, newest first: what the Sample and SFT panes start from."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from textual.widget import Widget
from textual.widgets import Select

from lal_core.errors import LalError
from lal_core.runs.folder import RunEntry, list_runs


def read_runs(widget: Widget, runs_dir: Path | None) -> list[RunEntry]:
    """The runs in `runs_dir`, oldest first; an unreadable folder is a notification (from
    `widget`) and no runs."""
    try:
        return list_runs(runs_dir)
    except (OSError, LalError) as exc:
        widget.notify(str(exc), severity="error", title="runs")
        return []


def run_label(run: RunEntry) -> str:
    best = f"{run.best_val:.3f}" if run.best_val is not None else "-"
    return f"{run.run_id} · {run.status} · best {best}"


class RunPicker(Select[str]):
    """Runs to choose from. Damaged ones are left out (nothing can be loaded from them), and so
    are those `usable` rejects (the SFT pane wants a best checkpoint)."""

    def __init__(
        self,
        runs_dir: Path | None,
        *,
        usable: Callable[[RunEntry], bool] = lambda run: True,
        prompt: str = "run",
        id: str | None = None,
    ) -> None:
        super().__init__([], prompt=prompt, id=id, compact=True)
        self.runs_dir = runs_dir
        self.usable = usable

    def on_mount(self) -> None:
        self.reload()

    def reload(self, select: str | None = None, runs: list[RunEntry] | None = None) -> None:
        """List the runs again (or show `runs`, as the caller has just listed them), keeping the
        choice (or choosing the run folder `select`)."""
        if runs is None:
            runs = read_runs(self, self.runs_dir)
        current = select or self.run_path
        options = [
            (run_label(r), str(r.path)) for r in reversed(runs) if not r.damaged and self.usable(r)
        ]
        self.set_options(options)
        values = [value for _, value in options]
        if current in values:
            self.value = current
        elif values:
            self.value = values[0]

    @property
    def run_path(self) -> str | None:
        """The chosen run folder, None when there is none to choose."""
        return None if self.is_blank() else str(self.value)
