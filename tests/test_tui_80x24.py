"""Every pane at 80x24: its tables, hint and status lines and the key footer fit the width.

Snapshots of each pane at 80x24 (the Train pane's is `test_train_pane_writing_at_80x24` in
test_tui_snapshots.py), with the same fixed data as the 100x30 ones, and plain checks that can
fail without a picture: nothing in the Runs table to scroll sideways, every word of the hint and
every key of the footer on screen, and the wider layout back when the terminal widens.
Update the pictures with `pytest tests/test_tui_80x24.py --snapshot-update`.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import test_tui_snapshots as shots
from rich.cells import cell_len
from rich.console import Console
from textual.app import App
from textual.widgets import DataTable

from lal_core.runs import events as ev
from lal_tui.panes.runs import HINT
from lal_tui.panes.sample import SamplePane
from lal_tui.panes.train import TrainPane
from lal_tui.widgets.fit import (
    MIN_SQUEEZED,
    Column,
    FittingLine,
    ellipsized,
    first_fitting,
    fit_columns,
)
from lal_tui.work.messages import SampleStarted, SampleToken

SIZE = (80, 24)
# the dashboard with two fixed runs, a fixed backend probe and corpus count
snap_app = shots.snap_app
# a run named by hand, longer than the table's room at 80 columns, and default-named runs
LONG_ID = "shakespeare-small-dropout-0.2-lr-6e-4-warmup-200-batch-32"
MORE_RUNS = [f"20260102-1{i}0000-medium-torch-{i + 2}" for i in range(3)]


def screen_lines(app: App) -> list[str]:
    """The screen as text, a string per row: what `App.export_screenshot` draws, less the SVG."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True)
    screen = app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    console.print(screen)
    return console.export_text().splitlines()


async def show_more_runs(pilot) -> None:
    """The Runs pane with three more runs and one named by hand (its id is long)."""
    runs = pilot.app.settings.runs_dir
    evals = shots.SPEC_EVALS[:3]
    for i, run_id in enumerate(MORE_RUNS):
        shots.write_run(runs, run_id, "torch", evals, "interrupted", 90000 + 3600 * i)
    shots.write_run(runs, LONG_ID, "mlx", evals, "completed", 100000)
    pilot.app.runs_changed()
    await pilot.press("5")
    await pilot.pause(0.3)


def footer_fits(app: App) -> None:
    """Every key the footer shows is on the bottom row, whole."""
    bottom = screen_lines(app)[-1]
    shown = [b for _, b, _, _ in app.screen.active_bindings.values() if b.show]
    assert len(shown) >= 3  # t, ? and q at least
    for binding in shown:
        # a group's keys show under the group's description ("[] Evals")
        words = binding.group.description if binding.group else binding.description
        assert f"{app.get_key_display(binding)} {words}" in bottom or words in bottom, bottom


# -- plain checks ---------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_runs_pane_fits_80_columns_and_widens_and_narrows_again(snap_app):
    async with snap_app.run_test(size=SIZE) as pilot:
        await show_more_runs(pilot)
        table = snap_app.query_one("#runs-table", DataTable)
        assert table.max_scroll_x == 0  # nothing hidden to the right
        lines = screen_lines(snap_app)
        shown = "\n".join(lines)
        assert all(cell_len(line) <= SIZE[0] for line in lines)
        for run_id in [*MORE_RUNS, "20260101-140000-tiny-mlx"]:
            assert run_id in shown
        assert LONG_ID not in shown and LONG_ID[:30] in shown  # narrowed, with "…"
        labels = [str(c.label) for c in table.columns.values()]
        assert labels == ["", "run", "best", "@iter", "status"]
        # the hint wraps: all of it is on screen, in the rows of its widget
        info = snap_app.query_one("#runs-info").region
        assert info.height == 2
        assert " ".join(" ".join(lines[info.y : info.bottom]).split()) == HINT
        footer_fits(snap_app)

        await pilot.resize_terminal(140, 30)
        await pilot.pause(0.2)
        labels = [str(c.label) for c in table.columns.values()]
        assert labels == ["", "run", "config", "backend", "best val", "@iter", "status", "date"]
        assert table.max_scroll_x == 0 and LONG_ID in "\n".join(screen_lines(snap_app))

        await pilot.resize_terminal(*SIZE)
        await pilot.pause()
        assert [str(c.label) for c in table.columns.values()][2] == "best"
        assert table.size.height == table.row_count + 1  # no row left over for a scrollbar


@pytest.mark.slow
@pytest.mark.asyncio
async def test_every_panes_footer_and_train_status_fit_80_columns(snap_app):
    async with snap_app.run_test(size=SIZE) as pilot:
        for pane in ("setup", "train", "sample", "sft", "runs"):
            snap_app.action_show_pane(pane)
            await pilot.pause()
            footer_fits(snap_app)
        snap_app.action_show_pane("train")
        pane = snap_app.query_one(TrainPane)
        # the synthetic run's start, evals and last step, as the pane's messages would bring them
        events = shots.synthetic_run()
        steps = [e for e in events if isinstance(e, ev.StepDone)]
        for event in [e for e in events if isinstance(e, ev.RunStarted | ev.EvalDone)]:
            pane.record(event)
        pane.record(steps[-1])
        pane.redraw()  # not waiting for the timer
        await pilot.pause()
        status = snap_app.query_one("#train-status", FittingLine)
        line = screen_lines(snap_app)[2]  # below the tabs
        assert str(status.render()).strip() == line.strip()
        assert "best 4.7376 @ 750" in line and "ETA" in line and "torch/cpu" not in line
        await pilot.resize_terminal(120, 30)
        await pilot.pause()
        assert "torch/cpu" in screen_lines(snap_app)[2]  # the fullest form again


def test_fitting_prefers_the_fullest_form_and_column_set():
    assert first_fitting(10, ("a long form", "short")) == "short"
    assert first_fitting(20, ("a long form", "short")) == "a long form"
    assert first_fitting(3, ("a long form", "short")) == "short"  # the shortest, cut
    assert first_fitting(0, ("a long form", "short")) == "a long form"  # not laid out yet
    assert ellipsized("abcdef", 6) == "abcdef" and ellipsized("abcdef", 4) == "abc…"
    columns = (
        Column("id", "id"),
        Column("value", "value", short="v"),
        Column("when", "when", drop=1),
    )
    rows = [{"id": "run-0123456789abcdef", "value": "1", "when": "2026-01-01"}]
    # each column as wide as its widest cell or label, and a cell of padding each side
    full, short, dropped = 20 + 5 + 10 + 6, 20 + 1 + 10 + 6, 20 + 1 + 4
    assert fit_columns(columns, rows, full, "id").columns == columns
    assert fit_columns(columns, rows, full, "id").widths == (20, 5, 10)
    assert not fit_columns(columns, rows, full, "id").short
    assert fit_columns(columns, rows, short, "id").short
    narrow = fit_columns(columns, rows, dropped, "id")
    assert [c.key for c in narrow.columns] == ["id", "value"] and narrow.widths == (20, 1)
    # then the id column narrows, to no less than MIN_SQUEEZED
    assert fit_columns(columns, rows, dropped - 5, "id").widths == (15, 1)
    assert fit_columns(columns, rows, 10, "id").widths == (MIN_SQUEEZED, 1)
    assert fit_columns(columns, rows, 0, "id").widths == (20, 5, 10)  # not laid out yet


# -- pictures -------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("key", ["1", "4"], ids=["setup", "sft"])
def test_idle_pane_at_80x24(key, snap_app, snap_compare):
    async def run_before(pilot):
        await pilot.press(key)
        await pilot.pause(0.4)

    assert snap_compare(snap_app, terminal_size=SIZE, run_before=run_before)


@pytest.mark.slow
def test_sample_pane_at_80x24(snap_app, snap_compare):
    async def run_before(pilot):
        await pilot.press("3")
        pane = pilot.app.query_one(SamplePane)
        run = Path("checkpoints/20260101-120000-tiny-torch")
        pane.begin(SampleStarted(run / "best.safetensors", "ROMEO:"))
        for text, prob in (("\n", 0.6), ("Come", 0.04), (",", 0.3), (" sir", 0.1), (".", 0.4)):
            pane.add_token(SampleToken(text, prob))
        await pilot.press("v", "v")  # the probability view, and its legend
        await pilot.pause(0.2)

    assert snap_compare(snap_app, terminal_size=SIZE, run_before=run_before)


@pytest.mark.slow
def test_runs_pane_open_at_80x24(snap_app, snap_compare):
    # two runs: the date column goes, "best val" is "best"; an opened run's curves below
    async def run_before(pilot):
        await pilot.press("5", "down", "enter")
        await pilot.pause(0.4)

    assert snap_compare(snap_app, terminal_size=SIZE, run_before=run_before)


@pytest.mark.slow
def test_runs_pane_many_runs_at_80x24(snap_app, snap_compare):
    # a long run id: config and backend go too, and the run column narrows to what is left
    assert snap_compare(snap_app, terminal_size=SIZE, run_before=show_more_runs)
