"""Runs as processes, as the dashboard sees them: started here, elsewhere, or before it opened.

A run is a process of its own that writes its folder; the dashboard follows the folder and asks
the run to stop through its stop file. Most tests here use the ThreadLauncher, a run in a thread
(`Trainer(...).run_training()`), or a run folder written by hand (a killed run, a run on another
host), or a stand-in for `subprocess.Popen` (what the real launcher would start). Two tests
start real `lal train` children (marked slow); every child is killed and reaped at teardown.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import test_tui
from test_tui import FAST, SIZE, Notes, job, micro, trained_run, wait_until

from conftest import one_short_sample, wait_for
from lal_core.cli.flags import request_argv
from lal_core.model.config import MODEL_CONFIGS
from lal_core.model.recipe import TrainConfig
from lal_core.runs import events as ev
from lal_core.runs.folder import RunDir
from lal_core.training.request import RunRequest
from lal_core.training.train import Trainer
from lal_tui.app import LalApp, main
from lal_tui.panes.train import TrainPane
from lal_tui.screens.confirm import QuitScreen
from lal_tui.settings import Settings, parse_settings
from lal_tui.work.launching import RUN_NICENESS, ProcessLauncher

# test_tui's fixtures: the micro model's settings, a ThreadLauncher, eager one-thread PyTorch
quick_engine, settings, threads = test_tui.quick_engine, test_tui.settings, test_tui.threads
tiny_corpus = test_tui.tiny_corpus


def unfinished_run(micro_cfg, corpus: Path, runs_dir: Path, host: str | None = None) -> Path:
    """A run as a kill -9 leaves it: run.json says running, its log has no `finished` line and
    nothing holds its lock; `host`: it says it runs on that host instead."""
    path = trained_run(micro_cfg, corpus, runs_dir)
    run = RunDir(path)
    record = run.read()
    process = record.process if host is None else replace(record.process, host=host)
    run.update(status="running", process=process)
    lines = run.metrics_path.read_text().splitlines(keepends=True)
    run.metrics_path.write_text("".join(x for x in lines if '"type": "finished"' not in x))
    return path


def table_status(app: LalApp, path: Path) -> str:
    return str(app.query_one("#runs-table").get_row(str(path))[6])


# -- attaching ------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.asyncio
async def test_two_dashboards_follow_a_cli_run_and_x_stops_it(settings, micro_cfg, tiny_corpus):
    # A run started elsewhere (here: the engine call `lal train` makes, in a thread); after its
    # eval at 4 it waits until the test lets it go on, so it is live while the dashboards look.
    recipe = one_short_sample(
        TrainConfig(max_iters=12, eval_interval=4, batch_size=2, warmup_iters=2)
    )
    gate = threading.Event()

    def hold(event) -> None:
        if isinstance(event, ev.StepDone) and event.iteration >= 5:
            gate.wait(30)

    trainer = Trainer(
        RunRequest(micro_cfg, recipe, data=tiny_corpus, runs_dir=settings.runs_dir), on_event=hold
    )
    thread = threading.Thread(target=trainer.run_training, daemon=True)
    thread.start()
    try:
        await _attach_two_and_stop(settings, trainer, thread, gate)
    finally:
        gate.set()
        trainer.stop.set("test over")
        thread.join(60)
    # it stopped as Ctrl-C would: saved, and it resumes to the end
    path = trainer.run.path
    assert RunDir(path).read().status == "stopped"
    resumed = Trainer.resume(path, runs_dir=settings.runs_dir).run_training()
    assert resumed.status == "completed" and RunDir(path).read().iteration == 12


async def _attach_two_and_stop(settings: Settings, trainer: Trainer, thread, gate) -> None:
    def writing() -> bool:
        assert thread.is_alive()
        if trainer.run is None or not trainer.run.run_json.is_file():
            return False  # the lock comes first, run.json a moment later: listed from then on
        return RunDir(trainer.run.path).writer() is not None

    wait_for(writing, what="the run to take its folder")
    path = trainer.run.path
    # `lal-tui --attach`: no run named, the newest live one
    first = LalApp(parse_settings(["--attach", "--runs-dir", str(settings.runs_dir)]))
    second = LalApp(replace(settings, attach=path))
    assert first.settings.attach == path
    async with first.run_test(size=SIZE) as p1, second.run_test(size=SIZE) as p2:
        panes = [first.query_one(TrainPane), second.query_one(TrainPane)]
        for pilot, pane in zip((p1, p2), panes, strict=True):
            await wait_until(pilot, lambda pane=pane: pane.plot.eval_iters == [0, 4])
            assert pane.run_id == path.name and pane.state == "running"
        assert [r.val_loss for r in RunDir(path).evals()] == panes[0].plot.val_losses
        await p2.press("x")  # from the second one: the run's stop file...
        gate.set()  # ...which it reads at its next step
        for pilot, app in ((p1, first), (p2, second)):
            await app.jobs.worker("train").wait()
            await pilot.pause(0.1)
        assert [p.state for p in panes] == ["stopped", "stopped"]
        status = first.query_one("#train-status")
        await wait_until(p1, lambda: "stopped" in str(status.render()))  # at its next redraw
    thread.join(60)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_killed_run_shows_as_interrupted(settings, micro_cfg, tiny_corpus, threads):
    path = unfinished_run(micro_cfg, tiny_corpus, settings.runs_dir)
    app = LalApp(replace(settings, attach=path), launcher=threads)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: job(app, "train") is not None)
        await job(app, "train").wait()
        await pilot.pause(0.1)
        pane = app.query_one(TrainPane)
        assert pane.state == "interrupted" and pane.plot.eval_iters == [0, 4, 8]
        status = app.query_one("#train-status")
        await wait_until(pilot, lambda: "interrupted" in str(status.render()))  # next redraw
        await pilot.press("5")
        assert table_status(app, path) == "interrupted"
        await pilot.press("enter")  # not live: its curves, here
        assert app.query_one("#runs-pane").shown == [str(path)]
        assert app.active_pane == "runs"


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_run_on_another_host_is_followed_not_stopped(
    settings, micro_cfg, tiny_corpus, threads, monkeypatch
):
    notes = Notes(monkeypatch)
    path = unfinished_run(micro_cfg, tiny_corpus, settings.runs_dir, host="gpu-box")
    app = LalApp(settings, launcher=threads)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        assert table_status(app, path) == "running"  # taken at its word
        await pilot.press("enter")  # a live run: followed in the Train pane
        assert app.active_pane == "train"
        pane = app.query_one(TrainPane)
        await wait_until(pilot, lambda: pane.plot.eval_iters == [0, 4, 8])
        assert app.running("train") and pane.state == "running"
        await pilot.press("x")
        assert any("runs on gpu-box" in m for m, _ in notes.seen)
        assert not RunDir(path).stop_path.exists()
        await pilot.press("q")  # nothing here to stop: no question
        await wait_until(pilot, lambda: not app.is_running, timeout=10)


def test_attach_to_no_run_is_one_line(settings, micro_cfg, tiny_corpus, capsys):
    runs = ["--runs-dir", str(settings.runs_dir)]
    for argv, words in (
        (["--attach", "no-such-run", *runs], "no run 'no-such-run'"),
        (["--attach", *runs], "no run is being written now"),
        (["--attach", "--train", *runs], "choose one"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        lines = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and len(lines) == 1, lines
        assert lines[0].startswith("lal-tui: error: ") and words in lines[0]
    # a finished run opens in the Train pane, with its history
    path = trained_run(micro_cfg, tiny_corpus, settings.runs_dir)
    assert parse_settings(["--attach", path.name, *runs]).attach == path


# -- the real launcher, with a stand-in for Popen -------------------------------------------------
class FakeChild:
    """What `subprocess.Popen` would return; the test decides when it exits and what it said."""

    def __init__(self, args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs
        self.log = Path(kwargs["stdout"].name)
        self.returncode: int | None = None
        self.signals: list[int] = []

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)
        self.returncode = -sig

    def fail(self, line: str) -> None:
        with open(self.log, "a") as log:
            log.write(f"some output\nlal: error: {line}\n")
        self.returncode = 1


@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_launcher_starts_lal_in_a_session_of_its_own(
    settings, micro_cfg, tiny_corpus, monkeypatch
):
    notes = Notes(monkeypatch)
    children: list[FakeChild] = []
    launcher = ProcessLauncher(
        popen=lambda *a, **k: children.append(FakeChild(*a, **k)) or children[-1]
    )
    settings = replace(settings, request=replace(settings.request, device="cpu"))
    base = trained_run(micro_cfg, tiny_corpus, settings.runs_dir)
    app = LalApp(settings, launcher=launcher)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("t")
        await wait_until(pilot, lambda: children)
        child = children[-1]
        run = RunDir(app.current_run_dir)
        argv = ["train", *request_argv(settings.request), "--run-id", run.run_id]
        assert child.args == [sys.executable, "-m", "lal_core.cli", *argv]
        assert child.kwargs["start_new_session"] and child.kwargs["stdin"] == subprocess.DEVNULL
        assert child.log == run.console_log("train") and child.kwargs["stderr"] == subprocess.STDOUT
        # it ends before writing run.json: its last line is the error, its folder goes
        child.fail("no such device: cpu")
        await app.jobs.worker("train").wait()
        await pilot.pause(0.1)
        assert "no such device: cpu" in notes.errors()
        assert not run.path.exists() and app.query_one(TrainPane).state == "failed"

        # x before the run has taken its folder: the child is asked directly (SIGTERM)
        await pilot.press("t")
        await wait_until(pilot, lambda: len(children) == 2)
        await pilot.press("x")
        await app.jobs.worker("train").wait()
        await pilot.pause(0.1)
        assert children[-1].signals == [signal.SIGTERM]
        assert app.query_one(TrainPane).state == "stopped"

        # fine-tuning: `lal sft RUN --no-compare` with the dashboard's backend and device
        await pilot.press("4", "f")
        await wait_until(pilot, lambda: len(children) == 3)
        assert children[-1].args[3:] == [
            "sft", str(base), "--no-compare", "--backend", "torch", "--device", "cpu"
        ]  # fmt: skip
        assert children[-1].log == RunDir(base).console_log("sft")
        children[-1].fail("the run is busy")
        await app.jobs.worker("sft").wait()
        await pilot.pause(0.1)
        assert "the run is busy" in notes.errors() and (base / "run.json").is_file()

    # a model config `lal train` does not know: one line, nothing started or written
    app = LalApp(micro(settings, FAST), launcher=launcher)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("t")
        await pilot.pause(0.1)
        assert any("unknown config 'micro'" in m for m in notes.errors())
        assert len(children) == 3 and sorted(settings.runs_dir.iterdir()) == [base]


# -- real child processes -------------------------------------------------------------------------
@pytest.fixture
def processes():
    """The real launcher; every child it started is killed (its whole session) and reaped at
    the end, whatever the test did."""
    started: list[subprocess.Popen] = []

    def popen(*args, **kwargs):
        started.append(subprocess.Popen(*args, **kwargs))
        return started[-1]

    launcher = ProcessLauncher(popen=popen)
    launcher.started = started  # children stay here; `launcher.children` drops the reaped
    yield launcher
    for child in started:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(30)


@pytest.fixture
def tiny_run(settings, tiny_corpus) -> Settings:
    """`lal train --config tiny` at batch 2 on a short corpus, on the CPU."""

    def recipe(**changes) -> Settings:
        train = one_short_sample(TrainConfig(batch_size=2, eval_interval=2, **changes))
        request = replace(
            settings.request, model_config=MODEL_CONFIGS["tiny"], train_config=train, device="cpu"
        )
        return replace(settings, request=request)

    return recipe


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_run_goes_on_after_the_dashboard_quits_and_x_from_another_stops_it(
    tiny_run, processes
):
    # One real child for both halves (each costs seconds of importing torch): the run a dashboard
    # started outlives it, a second dashboard attaches to it, and its x stops it cleanly. The
    # killed-run half (interrupted in the Train and Runs panes) runs on faked and thread runs
    # above; tests/test_signals.py kills real processes.
    app = LalApp(tiny_run(max_iters=10_000), launcher=processes)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("t")
        await pilot.press("q")  # at once: the child is still importing torch
        assert isinstance(app.screen, QuitScreen)
        await pilot.press("l")  # leave it running
        await wait_until(pilot, lambda: not app.is_running, timeout=10)
    (child,) = processes.started
    assert child.poll() is None  # the dashboard is gone, the run is not
    # It yields the cores to a dashboard's keys: its threads inherit this from its first one.
    assert os.getpriority(os.PRIO_PROCESS, child.pid) == RUN_NICENESS
    run = RunDir(app.current_run_dir)

    def steps_after_quit() -> bool:
        assert child.poll() is None, child.returncode
        return run.path.joinpath("metrics.jsonl").is_file() and len(run.evals()) >= 2

    # it trains on with nobody watching
    wait_for(steps_after_quit, 300, "progress after the dashboard quit")

    second = LalApp(replace(app.settings, attach=run.path), launcher=ProcessLauncher())
    async with second.run_test(size=SIZE) as pilot:
        pane = second.query_one(TrainPane)
        await wait_until(pilot, lambda: pane.plot.eval_iters[:2] == [0, 2], timeout=60)
        await pilot.press("x")  # its stop file: it finishes the step and saves
        await job(second, "train").wait()
        assert run.read().status == "stopped" and pane.state == "stopped"
    assert child.wait(30) == 130  # as `lal train` exits on Ctrl-C
    assert (run.path / "best.safetensors").is_file() and (run.path / "final.safetensors").is_file()
    log = run.console_log("train").read_text()
    assert f"run {run.run_id}" in log and f"resume with: lal train --resume {run.run_id}" in log
