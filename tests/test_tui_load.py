"""What keeps the dashboard's keys quick while a run trains beside it on the same cores.

A frame late is a key late. What made frames late (bench/tui_latency.py, issue 16): full garbage
collections walking the ~200,000 objects torch brings, and a footer rebuilt several times per
pane switch. These tests check the causes stay away: the dashboard starts without a backend in
it, the backends' objects are frozen out of collections while it runs (and unfrozen when it
ends), and a pane switch rebuilds the footer once, with the new pane's keys.
"""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from lal_core.model.config import MODEL_CONFIGS
from lal_core.model.recipe import TrainConfig
from lal_core.training.request import RunRequest
from lal_tui.app import LalApp
from lal_tui.settings import Settings
from lal_tui.widgets.key_footer import KeyFooter
from lal_tui.work.launching import ThreadLauncher

SIZE = (100, 30)


@pytest.fixture
def app(small_corpus, isolated_home) -> LalApp:
    request = RunRequest(
        model_config=MODEL_CONFIGS["tiny"],
        train_config=TrainConfig(max_iters=8),
        data=str(small_corpus),
        runs_dir=isolated_home / "checkpoints",
    )
    return LalApp(Settings(request=request), launcher=ThreadLauncher())


def test_the_dashboard_starts_without_a_backend():
    """torch takes seconds to import and brings most of the heap: the Setup pane's probe imports
    it on a worker once the dashboard is on screen, not the dashboard's own imports."""
    code = "import sys, lal_tui.app; print('torch' in sys.modules, 'mlx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.asyncio
async def test_the_backends_objects_are_left_out_of_collections(app):
    async with app.run_test(size=SIZE):
        await app.workers.wait_for_complete()  # the probe: torch and mlx imported
        await app.workers.wait_for_complete()
        assert "torch" in sys.modules
        frozen = gc.get_freeze_count()
        # what a full collection still walks is a small part of the heap
        assert frozen > 100_000 and len(gc.get_objects()) < frozen / 4
    assert gc.get_freeze_count() == 0  # all collectable again once the app has ended


def footer_labels(app: LalApp) -> list[str]:
    from textual.widgets._footer import FooterKey

    return [key.description for key in app.query_one(KeyFooter).query(FooterKey)]


@pytest.mark.asyncio
async def test_a_pane_switch_rebuilds_the_footer_once_with_its_keys(app):
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        footer = app.query_one(KeyFooter)
        await pilot.press("2")
        await pilot.pause(0.2)
        assert "Smoothing" in footer_labels(app)  # the Train pane's own keys
        before = footer.rebuilds

        await pilot.press("3")
        await pilot.pause(0.2)
        assert "Smoothing" not in footer_labels(app)
        assert footer.rebuilds == before + 1  # focus, tab and bindings changed: one rebuild

        app.refresh_bindings()  # nothing shown changes: nothing is rebuilt
        app.refresh_bindings()
        await pilot.press("3")
        await pilot.pause(0.2)
        assert footer.rebuilds == before + 1

        await pilot.press("2")
        await pilot.pause(0.2)
        assert "Smoothing" in footer_labels(app) and footer.rebuilds == before + 2
