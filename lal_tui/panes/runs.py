"""Runs pane: past runs, one run's curves, two runs' val curves overlaid; resume, and delete
once confirmed. `s` saves the curves on screen (or the highlighted run's) as a picture in the
run's folder; `e` starts a quality report on the highlighted run (`lal report`, best against
final, in a process of its own: `lal_tui.work.tasks.reporting`, which posts its progress
here), shows its progress, and cancels it when pressed again. An opened run shows its last
report's figures.

`enter` on a live run (training here, in another terminal or on another host) asks the app to
follow it in the Train pane; on any other run it draws its curves here. A live run's best val
is updated at each eval the dashboard sees (the app calls `show_best`), and its row read again
every few seconds while the pane is on screen. A damaged run folder (run.json unreadable) is
listed with its reason, so it can be found and deleted; it cannot be opened, compared or
resumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static
from textual_plotext import PlotextPlot

from lal_core.errors import LalError
from lal_core.runs.folder import RunDir, RunEntry, delete_run
from lal_tui.screens.confirm import ConfirmScreen
from lal_tui.widgets.fit import Column, Fitted, ellipsized, fit_columns
from lal_tui.widgets.loss_plot import Series, VLine, draw
from lal_tui.widgets.run_picker import read_runs
from lal_tui.work.messages import EngineError, ReportDone, ReportProgress

OVERLAY_COLORS = ("orange", "cyan")
# the table's columns; at 80 columns the date goes first (a run id starts with it), then the
# backend and config (also in a run id), and, for a very long run id, the run column narrows
COLUMNS = (
    Column("mark", ""),
    Column("run", "run"),
    Column("config", "config", drop=3),
    Column("backend", "backend", drop=2),
    Column("best", "best val", short="best"),
    Column("iter", "@iter"),
    Column("status", "status"),
    Column("date", "date", drop=1),
)
HINT = "enter: open · space: mark two · c: overlay · s: picture · e: report · d: delete · u: resume"
LIVE_SECONDS = 2.0  # how often a live run's row is read again while this pane is on screen


def run_curves(run: Path) -> tuple[list[Series], list[VLine]]:
    """Step loss, train and val per eval of one run, from its metrics.jsonl."""
    steps, evals = RunDir(run).curves()
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


def best_cells(best_val: float | None, best_iter: int | None) -> tuple[str, str]:
    """The "best val" and "@iter" cells of a run's row."""
    val = f"{best_val:.4f}" if best_val is not None else "-"
    return val, str(best_iter) if best_iter is not None else "-"


def run_cells(run: RunEntry, marked: bool) -> dict[str, str]:
    """A run's row: column key to cell."""
    best, at = best_cells(run.best_val, run.best_iter)
    return {
        "mark": "●" if marked else " ",
        "run": run.run_id,
        "config": run.config,
        "backend": run.backend,
        "best": best,
        "iter": at,
        "status": run.status,
        "date": run.date,
    }


def damage_line(run: RunEntry) -> str:
    """Why a run is damaged, without its folder's path (the row shows which run it is)."""
    run_json = run.path / "run.json"
    reason = (run.error or "run.json cannot be read").replace(str(run_json), "run.json")
    return f"⚠ {run.run_id} is damaged: {reason} (d deletes it)"


def report_line(path: Path) -> str:
    """The run's last report in a few words (' · report: best: loss 4.74, ...'), or ''."""
    from lal_core.quality.report_file import read_report, summary

    try:
        report = read_report(RunDir(path))
    except LalError as exc:
        return f" · report: {exc}"
    return f" · report: {summary(report)}" if report is not None else ""


class RunsPane(Vertical):
    BINDINGS = [
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("s", "save_picture", "Picture"),
        Binding("e", "report", "Report"),
        Binding("d", "delete", "Delete"),
        Binding("u", "resume", "Resume"),
        Binding("r", "refresh_runs", "Refresh", show=False),  # it refreshes itself
    ]

    @dataclass
    class ResumeRequested(Message):
        """u: continue this stopped, interrupted or failed run."""

        path: Path

    @dataclass
    class FollowRequested(Message):
        """enter on a live run: follow it in the Train pane."""

        path: Path

    @dataclass
    class PictureRequested(Message):
        """s: draw these runs' curves (one run, or the two overlaid) into a PNG."""

        paths: tuple[Path, ...]

    @dataclass
    class ReportRequested(Message):
        """e: report on this run (or, while a report runs, cancel it)."""

        path: Path

    @dataclass
    class RunDeleted(Message):
        """d, confirmed: this run folder is gone (every list of runs reads the folder again)."""

        path: Path

    def __init__(self, runs_dir: Path | None, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.runs_dir = runs_dir
        self.runs: dict[str, RunEntry] = {}
        self.marked: list[str] = []
        self.shown: list[str] = []
        self.report_stopped = False  # a report was cancelled: what it still says is stale
        self.fitted: Fitted | None = None  # the columns the table shows now

    def compose(self) -> ComposeResult:
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Static(HINT, id="runs-info")
        yield PlotextPlot(id="runs-plot")

    def on_mount(self) -> None:
        self.refresh_runs()
        self.set_interval(LIVE_SECONDS, self.refresh_live)

    def on_resize(self) -> None:
        self.fill_table()  # a narrower or wider pane may show fewer or more columns

    @property
    def table(self) -> DataTable:
        return self.query_one(DataTable)

    def refresh_live(self) -> None:
        """While a listed run is live and this pane is on screen, read the runs again: a run's
        best val and iteration change at each eval, in this process or another one."""
        if self.is_on_screen and any(r.status == "running" for r in self.runs.values()):
            self.refresh_runs()

    def refresh_runs(self, runs: list[RunEntry] | None = None) -> None:
        """List the runs again (or show `runs`, as the caller has just listed them)."""
        if runs is None:
            runs = read_runs(self, self.runs_dir)
        self.runs = {str(r.path): r for r in reversed(runs)}
        self.marked = [m for m in self.marked if m in self.runs]
        self.fill_table(always=True)

    def fill_table(self, always: bool = False) -> None:
        """Show the runs with the columns that fit the pane's width (the rows again only when
        the columns change, unless `always`)."""
        table = self.table
        rows = {key: run_cells(r, key in self.marked) for key, r in self.runs.items()}
        room = self.table_room(len(rows))
        fitted = fit_columns(COLUMNS, list(rows.values()), room, "run", table.cell_padding)
        if fitted == self.fitted and not always:
            return
        row = table.cursor_row
        if fitted != self.fitted:
            self.fitted = fitted
            table.clear(columns=True)
            # widths measured here, not by the table: it measures new columns only when idle,
            # and a frame drawn before that (on a resize) would keep the labels' widths
            for c, width in zip(fitted.columns, fitted.widths, strict=True):
                table.add_column(c.shown_label(fitted.short), key=c.key, width=width)
        table.clear()
        run_width = fitted.widths[[c.key for c in fitted.columns].index("run")]
        for key, cells in rows.items():
            cells["run"] = ellipsized(cells["run"], run_width)  # where its column is narrowed
            table.add_row(*(cells[c.key] for c in fitted.columns), key=key)
        if self.runs and row is not None:
            table.move_cursor(row=min(row, len(self.runs) - 1))

    def table_room(self, rows: int) -> int:
        """The table's width for its columns: the pane's, less the vertical scrollbar when the
        rows overflow the table's max-height (0 while the pane is not laid out)."""
        table, max_height = self.table, self.table.styles.max_height
        overflows = max_height is not None and max_height.is_cells and rows + 1 > max_height.value
        return self.size.width - (table.styles.scrollbar_size_vertical if overflows else 0)

    def action_refresh_runs(self) -> None:
        self.refresh_runs()

    def show_best(self, path: Path, best_val: float | None, best_iter: int | None) -> None:
        """A live run's new best val and its iteration, as its eval says them (nothing read
        from disk: a followed run's history replays every eval)."""
        key = str(path)
        if key not in self.runs:
            self.refresh_runs()  # not listed yet
            return
        for column, value in zip(("best", "iter"), best_cells(best_val, best_iter), strict=True):
            self.table.update_cell(key, column, value)

    def current(self) -> str | None:
        table = self.table
        if not self.runs or table.cursor_row is None:
            return None
        return table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value

    def readable(self, key: str) -> RunEntry | None:
        """The run, or None (with a notification) when it is damaged: nothing to read in it."""
        run = self.runs[key]
        if run.damaged:
            self.notify(damage_line(run), severity="warning")
            return None
        return run

    def info(self, text: str, damaged: bool = False) -> None:
        info = self.query_one("#runs-info", Static)
        info.set_class(damaged, "-damaged")  # in the warning colour
        info.update(text)

    @on(DataTable.RowHighlighted, "#runs-table")
    def row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        run = self.runs.get(event.row_key.value or "")
        if run is not None and run.damaged:
            self.info(damage_line(run), damaged=True)
        elif self.query_one("#runs-info", Static).has_class("-damaged"):
            self.info(HINT)

    @on(DataTable.RowSelected, "#runs-table")
    def row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.open_run(event.row_key.value)

    def open_run(self, key: str) -> None:
        summary = self.readable(key)
        if summary is None:
            return
        if summary.status == "running":
            self.post_message(self.FollowRequested(summary.path))
            return
        series, vlines = run_curves(Path(key))
        self.shown = [key]
        draw(self.query_one("#runs-plot", PlotextPlot), summary.run_id, series, vlines, False)
        line = f"{summary.run_id}: {summary.status}, iter {summary.iteration}, {summary.device}"
        self.info(line + report_line(summary.path))

    def action_report(self) -> None:
        key = self.current()
        run = self.readable(key) if key is not None else None
        if run is not None:
            self.post_message(self.ReportRequested(run.path))

    def report_started(self, path: Path) -> None:
        self.report_stopped = False
        self.info(f"report on {path.name}: starting…")

    def report_cancelled(self) -> None:
        self.report_stopped = True
        self.info("report cancelled; nothing was saved")

    @on(ReportProgress)
    def report_progress(self, message: ReportProgress) -> None:
        if self.report_stopped:
            return  # posted before the cancel was seen: the line says "cancelled" now
        m = message
        self.info(f"report on {m.path.name}: {m.done}/{m.total} · {m.what} (e cancels)")

    @on(ReportDone)
    def report_done(self, message: ReportDone) -> None:
        self.info(f"report on {message.path.name} saved" + report_line(message.path))

    @on(EngineError)
    def failed(self, message: EngineError) -> None:
        """A report failed: said here (a picture that could not be drawn: a notification)."""
        if message.source == "report" and not message.stale:
            self.info(f"error: {message.message}")

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
            self.notify("mark two runs with space first", severity="warning")
            return
        runs = [self.readable(k) for k in self.marked]
        if None in runs:
            return
        series = [
            val_curve(r.path, f"{r.run_id} val", c)
            for r, c in zip(runs, OVERLAY_COLORS, strict=True)
        ]
        self.shown = list(self.marked)
        draw(self.query_one("#runs-plot", PlotextPlot), "val loss", series, [], False)
        a, b = runs
        self.info(f"val: {a.run_id} ({a.backend}) vs {b.run_id} ({b.backend})")

    def action_save_picture(self) -> None:
        """The runs whose curves are on screen, else the highlighted run."""
        current = self.current()
        keys = [k for k in self.shown if k in self.runs] or ([current] if current else [])
        runs = [self.readable(k) for k in keys]
        if not runs or None in runs:
            return
        self.post_message(self.PictureRequested(tuple(r.path for r in runs)))

    def action_resume(self) -> None:
        key = self.current()
        run = self.readable(key) if key is not None else None
        if run is None:
            return
        if run.status not in ("stopped", "interrupted", "failed"):
            self.notify(
                f"{run.run_id} is {run.status}; only a stopped, interrupted or failed run resumes",
                severity="warning",
            )
            return
        self.post_message(self.ResumeRequested(run.path))

    def action_delete(self) -> None:
        """Delete the highlighted run folder, once confirmed (not while it is being written)."""
        key = self.current()
        if key is None:
            return
        path, run_id = Path(key), self.runs[key].run_id
        if RunDir(path).writer() is not None:
            self.notify("that run is being written now; stop it first", severity="warning")
            return

        def done(confirmed: bool | None) -> None:
            if not confirmed:
                return
            try:
                delete_run(RunDir(path))
            except LalError as exc:
                self.notify(str(exc), severity="error")
                return
            self.notify(f"deleted {run_id}")
            self.post_message(self.RunDeleted(path))

        question = f"Delete run {run_id} and its checkpoints?"
        self.app.push_screen(ConfirmScreen(question, yes="Delete"), done)
