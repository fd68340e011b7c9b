"""Runs pane: past runs, one run's curves, two runs' val curves overlaid, delete with confirm."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Static
from textual_plotext import PlotextPlot

from lal_core.errors import LalError
from lal_core.runs import RunDir, delete_run, list_runs
from lal_tui.screens.confirm import ConfirmScreen
from lal_tui.widgets.loss_plot import Series, VLine, draw

OVERLAY_COLORS = ("orange", "cyan")


def run_curves(run: Path) -> tuple[list[Series], list[VLine]]:
    """Step loss, train and val per eval of one run, from its metrics.jsonl."""
    folder = RunDir(run)
    steps, evals = folder.steps(), folder.evals()
    series = [
        Series("step", [r.iteration for r in steps], [r.loss for r in steps], "gray"),
        Series("train", [r.iteration for r in evals], [r.train_loss for r in evals], "blue"),
        Series("val", [r.iteration for r in evals], [r.val_loss for r in evals], "orange"),
    ]
    vlines = []
    if evals:
        best = min(evals, key=lambda r: r.val_loss)
        vlines.append(VLine(best.iteration, "green", "best"))
    return series, vlines


def val_curve(run: Path, label: str, color: str) -> Series:
    evals = RunDir(run).evals()
    return Series(label, [r.iteration for r in evals], [r.val_loss for r in evals], color)


class RunsPane(Vertical):
    BINDINGS = [
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("d", "delete", "Delete"),
        Binding("u", "resume", "Resume"),
        Binding("r", "refresh_runs", "Refresh"),
    ]

    def compose(self) -> ComposeResult:
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Static(
            "enter: open · space: mark two · c: overlay val curves · d: delete · u: resume",
            id="runs-info",
        )
        yield PlotextPlot(id="runs-plot")

    def on_mount(self) -> None:
        self.marked: list[str] = []
        self.shown: list[str] = []
        table = self.query_one(DataTable)
        table.add_columns("", "run", "config", "backend", "best val", "@iter", "status", "date")
        self.refresh_runs()

    @property
    def table(self) -> DataTable:
        return self.query_one(DataTable)

    def refresh_runs(self) -> None:
        table = self.table
        row = table.cursor_row
        try:
            self.runs = {str(r.path): r for r in reversed(list_runs(self.app.settings.runs_dir))}
        except (OSError, LalError) as exc:
            self.app.notify(str(exc), severity="error", title="runs")
            self.runs = {}
        self.marked = [m for m in self.marked if m in self.runs]
        table.clear()
        for key, r in self.runs.items():
            table.add_row(
                "●" if key in self.marked else " ",
                r.run_id,
                r.config,
                r.backend,
                f"{r.best_val:.4f}" if r.best_val is not None else "-",
                str(r.best_iter) if r.best_iter is not None else "-",
                r.status,
                r.date,
                key=key,
            )
        if self.runs and row is not None:
            table.move_cursor(row=min(row, len(self.runs) - 1))

    def action_refresh_runs(self) -> None:
        self.refresh_runs()

    def current(self) -> str | None:
        table = self.table
        if not self.runs or table.cursor_row is None:
            return None
        return table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value

    @on(DataTable.RowSelected, "#runs-table")
    def row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.open_run(event.row_key.value)

    def open_run(self, key: str) -> None:
        summary = self.runs[key]
        series, vlines = run_curves(Path(key))
        self.shown = [key]
        draw(self.query_one("#runs-plot", PlotextPlot), summary.run_id, series, vlines, False)
        self.query_one("#runs-info", Static).update(
            f"{summary.run_id}: {summary.status}, iter {summary.iteration}, {summary.device}"
        )

    def action_mark(self) -> None:
        key = self.current()
        if key is None:
            return
        if key in self.marked:
            self.marked.remove(key)
        else:
            self.marked = (self.marked + [key])[-2:]
        self.refresh_runs()

    def action_compare(self) -> None:
        if len(self.marked) != 2:
            self.app.notify("mark two runs with space first", severity="warning")
            return
        series = [
            val_curve(Path(k), f"{self.runs[k].run_id} val", c)
            for k, c in zip(self.marked, OVERLAY_COLORS, strict=True)
        ]
        self.shown = list(self.marked)
        draw(self.query_one("#runs-plot", PlotextPlot), "val loss", series, [], False)
        a, b = (self.runs[k] for k in self.marked)
        self.query_one("#runs-info", Static).update(
            f"val: {a.run_id} ({a.backend}) vs {b.run_id} ({b.backend})"
        )

    def action_resume(self) -> None:
        key = self.current()
        if key is None:
            return
        if self.runs[key].status not in ("stopped", "interrupted", "failed"):
            self.app.notify(
                f"{self.runs[key].run_id} is {self.runs[key].status}; only a stopped, "
                "interrupted or failed run resumes",
                severity="warning",
            )
            return
        self.app.resume_run(Path(key))

    def action_delete(self) -> None:
        key = self.current()
        if key is None:
            return
        if self.app.is_training_run(Path(key)):
            self.app.notify("that run is training now; stop it first", severity="warning")
            return
        run_id = self.runs[key].run_id

        def done(confirmed: bool | None) -> None:
            if not confirmed:
                return
            try:
                delete_run(RunDir(Path(key)))
            except LalError as exc:
                self.app.notify(str(exc), severity="error")
                return
            self.app.notify(f"deleted {run_id}")
            self.app.runs_changed()

        self.app.push_screen(
            ConfirmScreen(f"Delete run {run_id} and its checkpoints?", yes="Delete"), done
        )
