"""The dashboard, driven with a pilot: a micro model on a tiny corpus, so each test takes seconds.

Training, sampling and fine-tuning really run. A run is a process of its own in production; here
the app is given a ThreadLauncher (the same engine calls on a thread: no interpreter to start,
and the micro model `lal train` does not know), and the panes follow the run's folder as they
would a child's. What is checked is what users see: the plot's data and markers, the status
line, streamed text equal to the CLI's, the SFT loss mask, notifications instead of tracebacks,
clean stops with checkpoints saved. Real child processes: tests/test_tui_runs.py.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest
from rich.text import Text
from textual.worker import WorkerState

from conftest import LONG, one_short_sample
from lal_core import cli
from lal_core.cli.flags import recipe_flags
from lal_core.errors import LalError
from lal_core.generation.controls import Controls
from lal_core.generation.sampling import Generation, load_for_sampling
from lal_core.model.config import MODEL_CONFIGS
from lal_core.model.recipe import TrainConfig, default_recipe
from lal_core.runs import events as ev
from lal_core.runs.folder import RunDir
from lal_core.sft import builtin_pairs, chat_answer, chat_prompt
from lal_core.training.request import RunRequest
from lal_core.training.train import train
from lal_tui.app import LalApp, main
from lal_tui.panes.runs import RunsPane
from lal_tui.panes.sample import SamplePane
from lal_tui.panes.sft import COUNTED_STYLES, MASKED_STYLE, SFTPane
from lal_tui.panes.train import REDRAW_SECONDS, SAMPLES_REDRAW_SECONDS, TrainPane
from lal_tui.screens.confirm import ConfirmScreen, QuitScreen
from lal_tui.settings import Settings, parse_settings
from lal_tui.widgets.eval_samples import NEWLINE, SampleView, last_lines, render_sample
from lal_tui.widgets.loss_plot import LossPlot
from lal_tui.work import signals
from lal_tui.work.launching import ThreadLauncher
from lal_tui.work.messages import ReportProgress, SampleFinished, SFTEvent, TrainEvent

SIZE = (100, 30)
# The dashboard's own short recipe (batch 4: a smoother curve to draw); LONG runs until stopped.
FAST = one_short_sample(
    TrainConfig(max_iters=8, eval_interval=4, batch_size=4, lr=3e-3, warmup_iters=2)
)


@pytest.fixture(autouse=True)
def quick_engine(monkeypatch):
    """Eager PyTorch on one thread: compiling a micro model costs more than it saves, and the
    test machine is shared (oversubscribed threads made each step several times slower)."""
    import torch

    import lal_core.backends.torch.backend as torch_backend

    monkeypatch.setattr(torch_backend, "default_compile", lambda device: False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def threads():
    """The app's launcher in these tests: runs on threads of this process. Whatever still runs
    when the test ends is stopped and waited for."""
    launcher = ThreadLauncher()
    yield launcher
    launcher.close()


@pytest.fixture(scope="session")
def tiny_corpus(small_corpus, tmp_path_factory) -> Path:
    """20,000 characters: a val split of about 500 tokens, so an eval is a few batches."""
    path = tmp_path_factory.mktemp("tui-corpus") / "tiny.txt"
    path.write_text(small_corpus.read_text()[:20_000])
    return path


@pytest.fixture
def settings(micro_cfg, tiny_corpus, isolated_home) -> Settings:
    request = RunRequest(
        model_config=MODEL_CONFIGS["tiny"],
        train_config=FAST,
        data=str(tiny_corpus),
        runs_dir=isolated_home / "checkpoints",
    )
    configs = {"tiny": MODEL_CONFIGS["tiny"], "micro": micro_cfg}
    return Settings(request=request, model_configs=configs)


def micro(settings: Settings, train_config: TrainConfig, **changes) -> Settings:
    """The micro model with this recipe (and other RunRequest fields changed)."""
    return settings.choose("micro", 0.0, train_config=train_config, **changes)


def train_events_into(seen: list):
    """A message hook that keeps the engine events the Train pane is sent."""
    return lambda m: seen.append(m.event) if isinstance(m, TrainEvent) else None


async def train_to_the_end(app: LalApp, pilot) -> None:
    """Start a run (t), wait for it to end, and let the Train pane draw what came."""
    await pilot.press("t")
    await job(app, "train").wait()
    await pilot.pause(REDRAW_SECONDS + 0.4)


def unique(messages: list) -> list:
    """Each message (or event) once: a hook sees a bubbling message at every widget it passes."""
    return list({id(m): m for m in messages}.values())


def job(app: LalApp, group: str):
    """The app's latest worker of a job group ("train", "sample", "sft", ...)."""
    return app.jobs.worker(group)


class Notes:
    """Records every notification the app shows."""

    def __init__(self, monkeypatch) -> None:
        self.seen: list[tuple[str, str]] = []
        real = LalApp.notify

        def notify(app, message, *args, **kwargs):
            self.seen.append((str(message), kwargs.get("severity", "information")))
            return real(app, message, *args, **kwargs)

        monkeypatch.setattr(LalApp, "notify", notify)

    def errors(self) -> list[str]:
        return [m for m, severity in self.seen if severity == "error"]


async def wait_until(pilot, condition, timeout: float = 60.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(step)


def trained_run(micro_cfg, corpus: Path, runs_dir: Path, **overrides) -> Path:
    cfg = TrainConfig(**{**FAST.to_dict(), **overrides})
    return train(RunRequest(micro_cfg, cfg, data=corpus, runs_dir=runs_dir)).run_dir


# -- training -------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_train_key_starts_a_run_and_the_plot_follows(settings, monkeypatch, threads):
    seen: list = []
    best_after_eval: list[tuple[int, int | None, int | None]] = []
    real_record = TrainPane.record

    def record(pane, event):
        real_record(pane, event)
        if isinstance(event, ev.EvalDone):
            best_after_eval.append((event.iteration, event.best_iter, pane.plot.best_iter))

    monkeypatch.setattr(TrainPane, "record", record)
    app = LalApp(settings, launcher=threads)
    hook = train_events_into(seen)
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        await pilot.press("1")
        assert app.focused.id == "configs"
        await pilot.press("down")  # tiny -> micro
        assert app.settings.config == "micro"
        await pilot.press("t")
        assert app.active_pane == "train"
        await job(app, "train").wait()
        await pilot.pause(REDRAW_SECONDS + 0.4)  # the redraw timer's next tick

        started = [e for e in unique(seen) if isinstance(e, ev.RunStarted)]
        evals = [e for e in unique(seen) if isinstance(e, ev.EvalDone)]
        assert len(started) == 1 and started[0].model_config.name == "micro"
        assert [e.iteration for e in evals] == [0, 4, 8]

        plot = app.query_one(TrainPane).plot
        assert plot.eval_iters == [0, 4, 8]
        assert plot.val_losses == [e.val_loss for e in evals]
        assert plot.train_losses == [e.train_loss for e in evals]
        assert len(plot.step_iters) == 8
        best = min(evals, key=lambda e: e.val_loss)
        # the marker follows the best eval as each one arrives, and ends at the best one
        assert [b for _, _, b in best_after_eval] == [b for _, b, _ in best_after_eval]
        assert plot.best_iter == best.iteration
        assert [(v.x, v.label) for v in plot.drawn.vlines] == [(best.iteration, "best")]
        assert plot.drawn.series["val"] == 3 and plot.drawn.series["step"] == 8

        status = app.query_one("#train-status").render()
        assert f"best val {best.val_loss:.4f} @ {best.iteration}" in str(status)
        assert "iter 8/8" in str(status) and "completed" in str(status)
        assert "torch/cpu" in str(status)

        # toggles change what the next redraw draws
        await pilot.press("m", "l")
        await pilot.pause(0.4)
        assert plot.drawn.log_scale and "step (ema)" in plot.drawn.series

    # an ordinary run folder: the CLI lists it
    run_dir = started[0].run_dir
    assert (run_dir / "best.safetensors").is_file() and (run_dir / "final.safetensors").is_file()
    assert RunDir(run_dir).read().status == "completed"


@pytest.fixture(scope="session")
def shifted_corpus(shakespeare, tmp_path_factory) -> Path:
    """Train text unlike the val text: with a high lr val loss soon climbs (see test_training)."""
    path = tmp_path_factory.mktemp("tui-shifted") / "shifted.txt"
    path.write_text("the cat sat on the mat.\n" * 600 + shakespeare.read_text()[:10_000])
    return path


@pytest.mark.slow
@pytest.mark.asyncio
async def test_early_stop_shows_its_marker(settings, micro_cfg, shifted_corpus, threads):
    recipe = TrainConfig(
        max_iters=200, eval_interval=4, batch_size=4, lr=1e-2, warmup_iters=2, patience=2
    )
    recipe = replace(recipe, eval_samples=0)  # many evals: no samples to draw
    settings = micro(settings, recipe, data=str(shifted_corpus))
    seen: list = []
    app = LalApp(settings, launcher=threads)
    async with app.run_test(size=SIZE, message_hook=train_events_into(seen)) as pilot:
        await train_to_the_end(app, pilot)
        stops = [e for e in unique(seen) if isinstance(e, ev.EarlyStopped)]
        assert len(stops) == 1
        plot = app.query_one(TrainPane).plot
        assert plot.early_stop_iter == stops[0].iteration
        assert plot.best_iter == stops[0].best_iter < stops[0].iteration
        assert [(v.x, v.label) for v in plot.drawn.vlines] == [
            (stops[0].best_iter, "best"),
            (stops[0].iteration, "early stop"),
        ]
        assert "early stopped" in str(app.query_one("#train-status").render())


@pytest.mark.asyncio
async def test_a_compiling_notice_shows_in_the_train_log(settings, threads):
    from textual.widgets import Log

    app = LalApp(settings, launcher=threads)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        line = "compiling the model with torch.compile on cpu: a one-time wait"
        app.query_one(TrainPane).post_message(TrainEvent(ev.Preparing(line=line)))
        await pilot.pause(0.2)
        assert line in app.query_one(TrainPane).query_one(Log).lines


@pytest.mark.asyncio
async def test_stop_key_ends_the_worker_cleanly_with_a_checkpoint(settings, threads):
    settings = micro(settings, LONG)
    settings = replace(settings, train_now=True)  # what `lal-tui --train` does: no key needed
    app = LalApp(settings, launcher=threads)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(TrainPane)
        await wait_until(pilot, lambda: len(pane.plot.step_iters) >= 2)
        await pilot.press("x")
        await job(app, "train").wait()
        assert job(app, "train").state in (WorkerState.SUCCESS, WorkerState.CANCELLED)
        run_dir = app.current_run_dir
        assert (run_dir / "final.safetensors").is_file()
        info = RunDir(run_dir).read()
        assert info.status == "stopped" and info.iteration < 1000


async def quit_while_training(app: LalApp, pilot) -> None:
    """t, two steps, then q: the app asks what to do with the run."""
    await pilot.press("t")
    pane = app.query_one(TrainPane)
    await wait_until(pilot, lambda: len(pane.plot.step_iters) >= 2)
    await pilot.press("q")
    assert isinstance(app.screen, QuitScreen)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_quit_during_a_run_asks_then_stops_and_saves(settings, threads):
    app = LalApp(micro(settings, LONG), launcher=threads)
    async with app.run_test(size=SIZE) as pilot:
        await quit_while_training(app, pilot)
        await pilot.press("n")  # changed my mind: the run goes on
        assert not isinstance(app.screen, QuitScreen) and app.running("train")
        await pilot.press("q")
        await pilot.press("s")  # stop it, then quit
        await wait_until(pilot, lambda: not app.is_running, timeout=60)
    run_dir = app.current_run_dir
    assert job(app, "train").state == WorkerState.SUCCESS
    assert RunDir(run_dir).read().status == "stopped" and RunDir(run_dir).writer() is None
    assert (run_dir / "final.safetensors").is_file()


@pytest.mark.slow  # the fast lane sees a run outlive the dashboard in the SIGTERM test
@pytest.mark.asyncio
async def test_quit_can_leave_the_run_running(settings, threads):
    app = LalApp(micro(settings, LONG), launcher=threads)
    async with app.run_test(size=SIZE) as pilot:
        await quit_while_training(app, pilot)
        await pilot.press("l")  # leave it running
        await wait_until(pilot, lambda: not app.is_running, timeout=10)
    run = RunDir(app.current_run_dir)
    assert run.writer() is not None and run.read().status == "running"
    (launch,) = threads.launches
    time.sleep(0.3)
    assert launch.running()  # it trains on without the dashboard
    run.request_stop("test")  # what `lal stop` does
    launch.thread.join(60)
    assert run.read().status == "stopped"


@pytest.mark.asyncio
async def test_a_dashboard_on_a_terminal_takes_sigterm_and_sighup_once_mounted(
    settings, threads, monkeypatch
):
    # run_test is headless (no terminal: no handlers); on a terminal they are in place as soon
    # as the app is mounted, and go with the app's event loop
    monkeypatch.setattr(LalApp, "is_headless", property(lambda app: False))
    app = LalApp(settings, launcher=threads)
    async with app.run_test(size=SIZE):
        loop = asyncio.get_running_loop()
        assert loop.remove_signal_handler(signal.SIGTERM)  # True: one was there
        assert loop.remove_signal_handler(signal.SIGHUP)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_sigterm_and_sighup_end_the_dashboard_and_leave_the_run(settings, threads):
    # What `kill` and a closed terminal do to the dashboard (lal_tui.work.signals): it is a viewer;
    # the run is a process of its own (here a thread) and goes on.
    app = LalApp(micro(settings, LONG), launcher=threads)
    left: list[int] = []
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("t")
        pane = app.query_one(TrainPane)
        await wait_until(pilot, lambda: len(pane.plot.step_iters) >= 2)
        signals.hang_up(app.jobs, leave=left.append)  # os._exit at once, in the real handler
        assert left == [128 + 1]
        await job(app, "train").wait()  # it stopped following...
        signals.terminate(app.jobs, app.exit)
        await wait_until(pilot, lambda: not app.is_running, timeout=10)
    run = RunDir(app.current_run_dir)
    steps = len(run.steps())
    time.sleep(0.5)
    assert run.writer() is not None and len(run.steps()) > steps  # ...the run did not stop
    run.request_stop("test")
    threads.launches[0].thread.join(60)
    info = run.read()
    assert info.status == "stopped" and info.iteration < LONG.max_iters
    assert (run.path / "final.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_missing_corpus_is_a_notification_and_the_app_stays_up(
    settings, tmp_path, monkeypatch, threads
):
    notes = Notes(monkeypatch)
    settings = settings.with_data(str(tmp_path / "no-such-corpus.txt"))
    app = LalApp(settings, launcher=threads)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("t")
        await job(app, "train").wait()
        await pilot.pause(0.2)
        assert any("not found" in m and "no-such-corpus.txt" in m for m in notes.errors())
        assert job(app, "train").state == WorkerState.SUCCESS  # handled, not a crash
        status = app.query_one("#train-status")
        await wait_until(pilot, lambda: "failed" in str(status.render()))  # at its next redraw
        # the folder reserved for its log held nothing else: it is gone
        assert not settings.runs_dir.exists() or not any(settings.runs_dir.iterdir())
        # the Setup pane says so too, and the app still answers keys
        await pilot.press("1")
        await wait_until(pilot, lambda: "not found" in str(app.query_one("#corpus-info").render()))
        await pilot.press("5")
        assert app.active_pane == "runs" and app.is_running


@pytest.mark.asyncio
async def test_setup_validates_as_you_type(settings, monkeypatch, threads):
    notes = Notes(monkeypatch)
    app = LalApp(settings, launcher=threads)
    async with app.run_test(size=SIZE) as pilot:
        field = app.query_one("#field-batch_size")
        field.value = "0"
        await pilot.pause()
        assert "batch-size must be a positive integer" in str(
            app.query_one("#setup-error").render()
        )
        assert field.has_class("-invalid")
        await pilot.press("t")  # refused: the setup is wrong
        assert job(app, "train") is None and app.active_pane == "setup"
        assert notes.errors()
        field.value = "6"
        app.query_one("#field-lr").value = "1e-3"
        await pilot.pause()
        assert app.setup_error is None and not field.has_class("-invalid")
        recipe = app.settings.request.train_config
        assert recipe.batch_size == 6 and recipe.lr == 1e-3
        assert recipe.max_iters == FAST.max_iters  # the fields not shown keep their values
        memory = app.query_one("#configs").get_row("tiny")[-1]
        assert "@ batch 6" in str(memory)
        app.query_one("#field-micro_batch").value = "4"  # does not divide 6: one line
        await pilot.pause()
        assert "use one of 1, 2, 3, 6" in str(app.query_one("#setup-error").render())
        app.query_one("#field-micro_batch").value = "2"
        await pilot.pause()
        assert app.settings.request.train_config.micro_batch == 2
        assert "@ micro 2 of 6" in str(app.query_one("#configs").get_row("tiny")[-1])


@pytest.mark.asyncio
async def test_choosing_a_config_gives_untouched_fields_its_defaults(settings, threads):
    # Small trains with its own dropout and schedule: the fields left at tiny's take small's.
    tiny = replace(settings.request, model_config=MODEL_CONFIGS["tiny"])
    tiny = replace(tiny, train_config=default_recipe("tiny"))
    app = LalApp(Settings(request=tiny, model_configs=dict(MODEL_CONFIGS)), launcher=threads)
    async with app.run_test(size=SIZE) as pilot:
        app.query_one("#field-seed").value = "7"  # typed: it stays
        table = app.query_one("#configs")
        table.move_cursor(row=list(MODEL_CONFIGS).index("small"))
        await wait_until(pilot, lambda: app.settings.config == "small")
        await pilot.pause()
        request = app.settings.request
        assert request.model_config.dropout == MODEL_CONFIGS["small"].dropout != 0.1
        assert request.train_config.max_iters == default_recipe("small").max_iters != 5000
        assert request.train_config.seed == 7
        # every field small's recipe sets, shown or not (its beta2 has no field here)
        assert request.train_config == replace(default_recipe("small"), seed=7)
        assert app.query_one("#field-max_iters").value == str(default_recipe("small").max_iters)
        app.query_one("#field-dropout").value = "0.3"  # typed for small: kept for tiny too
        table.move_cursor(row=list(MODEL_CONFIGS).index("tiny"))
        await wait_until(pilot, lambda: app.settings.config == "tiny")
        await pilot.pause()
        request = app.settings.request
        assert request.model_config.dropout == 0.3
        assert request.train_config == replace(default_recipe("tiny"), seed=7)


# -- the samples drawn after each eval ------------------------------------------------------------
def shown_sample(pane: TrainPane) -> tuple[str, str]:
    """The sample view as drawn: its title and its text (its rows joined, spaces evened)."""
    view = pane.samples
    return str(view.border_title), " ".join(str(view.render()).split())


def inline(text: str) -> str:
    """A sample's text as the view shows it: newlines in place (NEWLINE), spaces evened."""
    return " ".join(text.replace("\n", NEWLINE).split())


def test_a_long_sample_shows_its_last_rows():
    from rich.console import Console

    text = render_sample("ROMEO:\n", " ".join(f"w{i}" for i in range(60)))
    shown = last_lines(text, 20, 3, Console())
    rows = shown.plain.split("\n")
    assert len(rows) == 3 and all(len(r) <= 20 for r in rows)
    assert rows[-1].endswith("w59") and "ROMEO:" not in shown.plain
    assert last_lines(Text("short"), 20, 3, Console()).plain == "short"


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_runs_samples_show_as_they_come_and_keys_step_through_evals(settings, threads):
    recipe = replace(FAST, eval_samples=2, eval_sample_tokens=6)
    seen: list = []
    app = LalApp(micro(settings, recipe), launcher=threads)
    async with app.run_test(size=SIZE, message_hook=train_events_into(seen)) as pilot:
        await train_to_the_end(app, pilot)
        done = [e for e in unique(seen) if isinstance(e, ev.SamplesDone)]
        assert [(e.iteration, e.status, len(e.texts)) for e in done] == [
            (i, "done", 2) for i in (0, 4, 8)
        ]
        texts = {
            e.iteration: [p + t for p, t in zip(e.prompts, e.texts, strict=True)] for e in done
        }
        pane = app.query_one(TrainPane)
        # the newest eval's last sample, as it was streamed
        title, text = shown_sample(pane)
        assert title.startswith("samples @ iter 8 (2/2") and text == inline(texts[8][1])
        assert "Evals" in footer_labels(app)

        await pilot.press("left_square_bracket")  # back one eval: the same sample of it
        title, text = shown_sample(pane)
        assert title.startswith("samples @ iter 4 (2/2") and "newest @ 8: ] to follow" in title
        assert text == inline(texts[4][1])
        await pilot.press("s")  # that eval's next (first) sample
        title, text = shown_sample(pane)
        assert title.startswith("samples @ iter 4 (1/2") and text == inline(texts[4][0])
        await pilot.press("left_square_bracket", "left_square_bracket")  # no eval before 0
        assert shown_sample(pane)[0].startswith("samples @ iter 0 (1/2")
        await pilot.press("right_square_bracket", "right_square_bracket")  # the newest: live
        title, text = shown_sample(pane)
        assert title.startswith("samples @ iter 8 (2/2") and "newest" not in title
        assert pane.samples.pinned is None

        # the writing figures, over the evals, beside the held-out text's when there is one
        await pilot.press("w")
        await pilot.pause(0.3)
        plot = pane.plot
        assert plot.view == "writing" and plot.writing_iters == [0, 4, 8]
        assert plot.drawn.series["distinct-2"] == 3 and plot.drawn.series["in a loop"] == 3
        assert plot.drawn.series["invented words"] == 3
        assert [v.label for v in plot.drawn.vlines] == ["best"]
        logged = app.query_one("#train-log").lines
        assert any(line.startswith("writing @ 8: distinct-2 ") for line in logged)
        await pilot.press("w")
        await pilot.pause(0.3)
        assert plot.view == "loss" and "val" in plot.drawn.series


def footer_labels(app: LalApp) -> list[str]:
    from textual.widgets._footer import FooterKey, FooterLabel

    keys = [key.description for key in app.query(FooterKey)]
    return keys + [str(label.render()) for label in app.query(FooterLabel)]


def eval_event(it: int, val: float, best: tuple[float, int]) -> ev.EvalDone:
    return ev.EvalDone(
        iteration=it,
        train_loss=val - 0.1,
        val_loss=val,
        lr=1e-3,
        is_best=best[1] == it,
        tokens_per_sec=1000.0,
        elapsed=it / 10,
        eval_seconds=0.1,
        best_val=best[0],
        best_iter=best[1],
        line=f"iter {it} | val {val:.4f}",
    )


@pytest.mark.asyncio
async def test_a_sample_streams_and_stepping_back_holds_the_view(settings, threads):
    from test_tui_snapshots import LATER_TEXT, PROMPTS, synthetic_samples

    app = LalApp(settings, launcher=threads)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        pane = app.query_one(TrainPane)
        title, text = shown_sample(pane)
        assert title == "samples" and "after each eval" in text
        for k, it in enumerate((0, 250)):
            pane.post_message(TrainEvent(eval_event(it, 5.0 - k, (5.0 - k, it))))
            for event in synthetic_samples(k, it):
                pane.post_message(TrainEvent(event))
        third = synthetic_samples(2, 500)
        pieces = [e for e in third if isinstance(e, ev.SampleText)]
        first_half = 1 + len(pieces) // 2  # SamplesStarted and half the pieces
        for event in third[:first_half]:
            pane.post_message(TrainEvent(event))
        await pilot.pause(SAMPLES_REDRAW_SECONDS + 0.2)
        # the newest sample as it is written: its prompt, then what it has so far
        streaming = pieces[first_half - 2]
        so_far = "".join(p.text for p in pieces[: first_half - 1] if p.index == streaming.index)
        title, text = shown_sample(pane)
        assert title == f"samples @ iter 500 ({streaming.index + 1}/3, s: next) · writing…"
        assert text.endswith(inline(PROMPTS[streaming.index] + so_far)[-60:])
        assert streaming.index == 1  # the second of three
        await pilot.press("s")  # the third: not begun
        waiting = ("samples @ iter 500 (3/3, s: next) · waiting", inline(PROMPTS[2]))
        assert shown_sample(pane) == waiting
        await pilot.press("s")  # the first: whole
        title, text = shown_sample(pane)
        assert title == "samples @ iter 500 (1/3, s: next)"
        assert text == inline(PROMPTS[0] + LATER_TEXT[0])
        await pilot.press("left_square_bracket")
        held = shown_sample(pane)
        assert held[0].startswith("samples @ iter 250 (1/3")
        assert "newest @ 500: ] to follow" in held[0]
        for event in third[first_half:]:  # the rest comes: the view stays where it was put
            pane.post_message(TrainEvent(event))
        await pilot.pause(SAMPLES_REDRAW_SECONDS + 0.2)
        assert shown_sample(pane) == held
        await pilot.press("right_square_bracket")  # the newest again, followed live
        done = third[-1]
        title, text = shown_sample(pane)
        assert title == "samples @ iter 500 (3/3, s: next)"
        assert text.endswith(inline(done.texts[2])[-60:])


def counted(method, counts: dict, key):
    """`method`, counting its calls in counts[key]."""

    def call(self, *args, **kwargs):
        counts[key] += 1
        return method(self, *args, **kwargs)

    return call


@pytest.mark.asyncio
async def test_a_followed_logs_samples_replay_without_a_redraw_per_event(
    settings, monkeypatch, threads
):
    """A dashboard that opens a run follows its log from the start: every eval's samples,
    thousands of pieces, recorded without a redraw for each."""
    from test_tui_snapshots import HELD_OUT, synthetic_samples

    run = settings.runs_dir / "replayed"
    run.mkdir(parents=True)
    log = ev.EventLog(run / "metrics.jsonl")
    evals = 60
    for k in range(evals):
        it = 10 * k
        log(ev.StepDone(iteration=it, loss=4.0, lr=1e-3, tokens_per_sec=1e3, elapsed=it / 10))
        log(eval_event(it, 4.0, (4.0, 0)))
        for event in synthetic_samples(min(k, 5), it):
            log(event)
    log.close()
    drawn = {SampleView: 0, LossPlot: 0}
    for cls in drawn:
        monkeypatch.setattr(cls, "redraw", counted(cls.redraw, drawn, cls))

    app = LalApp(settings, launcher=threads)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await pilot.pause(0.2)
        before = dict(drawn)
        app.follow("train", "following replayed…", run)
        await job(app, "train").wait()
        pane = app.query_one(TrainPane)
        last = 10 * (evals - 1)
        await wait_until(pilot, lambda: pane.plot.writing_iters[-1:] == [last])
        await pilot.pause(REDRAW_SECONDS + 0.2)
        book = pane.samples.book
        assert book.order == [10 * k for k in range(evals)]
        # each sample whole: its pieces folded into its text once done
        assert [len(p) for e in book.evals.values() for p in e.pieces] == [1] * 3 * evals
        title, _ = shown_sample(pane)
        assert title.startswith(f"samples @ iter {last} (3/3")
        # some 4,000 events: a few redraws on the timers, not one per event
        assert drawn[SampleView] - before[SampleView] <= 12
        assert drawn[LossPlot] - before[LossPlot] <= 4

        # the writing view: each figure over the evals, the held-out text's a dashed line
        await pilot.press("w")
        await pilot.pause(0.3)
        plot = pane.plot
        assert plot.drawn.series["distinct-2"] == evals
        assert plot.drawn.series["held-out distinct-2"] >= 20
        assert plot.drawn.series["held-out in a loop"] >= 20  # none of the held-out text loops
        assert plot.held_out == HELD_OUT and plot.title().startswith("writing")


@pytest.mark.asyncio
async def test_sft_pane_streams_the_answers_at_each_epochs_end(settings, threads):
    from test_tui_snapshots import HELD_OUT

    questions = ("Q: Who is Romeo?\nA:", "Q: What is a sonnet?\nA:")
    answer = [" Romeo", " is", " a", " Montague", ".", "<|end|>"]
    started = ev.SamplesStarted(iteration=13, prompts=questions, tokens=60, seed=1, controls="")
    epoch = ev.SFTEpochDone(
        epoch=1, epochs=5, masked_loss=3.2, skipped_batches=0, elapsed=2.0, line="sft epoch 1/5"
    )
    app = LalApp(settings, launcher=threads)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        pane = app.query_one(SFTPane)
        box = app.query_one("#sft-epoch-answers")
        pieces = [ev.SampleText(iteration=13, index=0, text=t) for t in answer[:4]]
        for event in (epoch, started, *pieces):
            pane.post_message(SFTEvent(event))
        await pilot.pause(0.5)
        assert str(box.border_title) == "answers after epoch 1/5, step 13 · writing…"
        shown = str(box.render())
        assert "training question\nQ: Who is Romeo?\nA: Romeo is a Montague" in shown
        # scrolled into view below the plot as it comes
        assert app.query_one("#sft-scroll").region.contains_point(box.region.offset)
        text = "".join(answer)
        figures = replace(HELD_OUT, samples=2, memorised_8=None, closed=0.5)
        texts = (text, " A poem")
        done = ev.SamplesDone(iteration=13, prompts=questions, texts=texts, figures=figures)
        pane.post_message(SFTEvent(done))
        await pilot.pause(0.5)
        assert str(box.border_title) == "answers after epoch 1/5, step 13 · closed 1/2 (50%)"
        shown = str(box.render())
        assert f"Q: Who is Romeo?\nA:{text}" in shown
        assert "held-out question\nQ: What is a sonnet?\nA: A poem" in shown


# -- sampling -------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.asyncio
async def test_sample_streams_and_equals_the_cli(settings, micro_cfg, tiny_corpus, capsys, threads):
    run_dir = trained_run(micro_cfg, tiny_corpus, settings.runs_dir)
    app = LalApp(settings, launcher=threads)
    lengths: list[int] = []
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        pane = app.query_one(SamplePane)
        assert app.query_one("#sample-run").value == str(run_dir)
        app.query_one("#prompt").value = "ROMEO:"
        app.query_one("#seed").value = "7"
        app.query_one("#tokens").value = "400"
        # as the g key does (pilot.press would wait for the busy process to go idle, i.e. for
        # the whole generation; the key itself is pressed in test_sample_stops_mid_generation)
        pane.action_generate()
        await wait_until(pilot, lambda: job(app, "sample") is not None, step=0.01)
        while app.running("sample") or not lengths:
            lengths.append(len(pane.output_text))
            await pilot.pause(0.02)
        await pilot.pause(0.1)
        text = pane.output_text
        assert len(pane.pieces) == 400
        # it grew in steps while generating, not all at once at the end
        growing = sorted({n for n in lengths if len("ROMEO:") < n < len(text)})
        assert len(growing) >= 3, lengths
        # the probability view colours each token by its band
        await pilot.press("v", "v")
        assert pane.view == "probability"
        spans = [s for s in pane.rendered.spans if s.start >= len("ROMEO:")]
        assert {s.style for s in spans} <= {"green", "yellow", "magenta", "red"}
        assert len(spans) == 400

    capsys.readouterr()
    argv = ["sample", str(run_dir), "--prompt", "ROMEO:", "--seed", "7", "--tokens", "400"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out == text + "\n"


@pytest.mark.slow
@pytest.mark.asyncio
async def test_several_samples_show_as_they_end_with_their_figures(
    settings, micro_cfg, tiny_corpus, threads
):
    run_dir = trained_run(micro_cfg, tiny_corpus, settings.runs_dir)
    app = LalApp(settings, launcher=threads)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        pane = app.query_one(SamplePane)
        for field, value in (("#prompt", "ROMEO:"), ("#seed", "5"), ("#tokens", "24")):
            app.query_one(field).value = value
        app.query_one("#samples").value = "3"
        await pilot.press("g")
        status = app.query_one("#sample-status")
        await wait_until(pilot, lambda: "in a loop" in str(status.render()))
        assert "3 samples:" in str(status.render()) and "memorised 8-grams" in str(status.render())
        shown = pane.output_text
    # Each is what `lal sample --seed 5 + i` draws alone.
    model = load_for_sampling(run_dir / "best.safetensors")
    for i in range(3):
        alone = Generation(model, "ROMEO:", 24, Controls(), 1, 5 + i).run()[0]
        assert f"── sample {i + 1} · seed {5 + i} ──\nROMEO:{alone.text}\n" in shown


@pytest.mark.slow
@pytest.mark.asyncio
async def test_sample_stops_mid_generation(settings, micro_cfg, tiny_corpus, threads):
    trained_run(micro_cfg, tiny_corpus, settings.runs_dir)
    finished: list[SampleFinished] = []
    app = LalApp(settings, launcher=threads)
    hook = lambda m: finished.append(m) if isinstance(m, SampleFinished) else None  # noqa: E731
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        await pilot.press("3")
        app.query_one("#tokens").value = "100000"
        await pilot.press("g")
        pane = app.query_one(SamplePane)
        await wait_until(pilot, lambda: len(pane.pieces) >= 5)
        await pilot.press("x")
        await job(app, "sample").wait()
        await pilot.pause(0.1)
        assert finished and finished[0].stopped and finished[0].tokens < 100000
        assert "stopped after" in str(app.query_one("#sample-status").render())


@pytest.mark.asyncio
async def test_sample_without_runs_says_so(settings, monkeypatch, threads):
    notes = Notes(monkeypatch)
    app = LalApp(settings, launcher=threads)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3", "g")
        assert any("no run to sample from" in m for m in notes.errors())
        assert job(app, "sample") is None


# -- SFT ------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_sft_pane_marks_exactly_the_answer_tokens(settings, threads):
    pair = builtin_pairs()[0]
    app = LalApp(settings, launcher=threads)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        pane = app.query_one(SFTPane)
        counted = "".join(t for t, c in pane.example_pieces if c)
        masked = "".join(t for t, c in pane.example_pieces if not c)
        assert counted == chat_answer(pair.answer)
        assert masked == chat_prompt(pair.question)
        # and that is what is drawn: highlighted spans are the answer, dimmed ones the prompt
        text = pane.example_text
        by_style = {"counted": "", "masked": ""}
        for span in text.spans:
            kind = "counted" if span.style in COUNTED_STYLES else "masked"
            assert span.style in (*COUNTED_STYLES, MASKED_STYLE)
            by_style[kind] += text.plain[span.start : span.end]
        assert by_style == {"counted": counted, "masked": masked}
        await pilot.press("e")
        second = builtin_pairs()[1]
        assert "".join(t for t, c in pane.example_pieces if c) == chat_answer(second.answer)


@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore:.*longer than the model's context")  # a 32-token model
async def test_sft_fine_tunes_and_shows_before_and_after(
    settings, micro_cfg, tiny_corpus, monkeypatch, threads
):
    notes = Notes(monkeypatch)
    run_dir = trained_run(micro_cfg, tiny_corpus, settings.runs_dir)
    requests: list = []
    app = LalApp(settings, launcher=threads)
    asked = (SFTPane.FineTuneRequested, SFTPane.AskRequested)
    hook = lambda m: requests.append(m) if isinstance(m, asked) else None  # noqa: E731
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        await pilot.press("4")
        pane = app.query_one(SFTPane)
        assert pane.run_path == str(run_dir)
        await pilot.press("f")
        await job(app, "sft").wait()
        await wait_until(
            pilot,
            lambda: (
                not app.workers._workers
                or not any(w.group == "ask" and w.is_running for w in app.workers)
            ),
        )
        await wait_until(pilot, lambda: "…" not in str(app.query_one("#sft-after").render()))
        assert not notes.errors()
        assert len(pane.epoch_losses) == 5 and len(pane.steps) > 5
        # each epoch's end answered its two questions, streamed in the pane, with the share
        # of answers the model closed
        assert len(pane.answers) == 5
        assert {(e.status, e.count) for e in pane.answers.evals.values()} == {("done", 2)}
        box = app.query_one("#sft-epoch-answers")
        assert str(box.border_title).startswith("answers after epoch 5/5, step ")
        assert " · closed " in str(box.border_title)
        newest = pane.answers.newest()
        assert f"{newest.prompts[1]}{newest.text(1)}" in str(box.render())
        assert (run_dir / "sft.safetensors").is_file()
        before = str(app.query_one("#sft-before").render())
        after = str(app.query_one("#sft-after").render())
        assert before.startswith("before (best): ") and after.startswith("after (sft): ")
    # f posted the pane's request and the app acted on it; then the pane asked its question
    # of both checkpoints
    requests = unique(requests)
    assert [type(m) for m in requests] == [SFTPane.FineTuneRequested, SFTPane.AskRequested]
    assert requests[0].run_path == str(run_dir) and requests[1].kinds == ("best", "sft")


# -- the app as a whole ---------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.asyncio
async def test_usable_at_80x24_with_help_and_palette(settings, threads):
    app = LalApp(settings, launcher=threads)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        plot = app.query_one(TrainPane).plot
        assert plot.size.height >= 8 and plot.size.width >= 70
        assert app.query_one("#train-log").size.height >= 3
        assert app.query_one("#train-samples").size.height >= 4
        await pilot.press("question_mark")
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        await pilot.press("ctrl+p")
        assert type(app.screen).__name__ == "CommandPalette"
        await pilot.press("escape")
        for key, pane in zip("12345", ("setup", "train", "sample", "sft", "runs"), strict=True):
            await pilot.press(key)
            assert app.active_pane == pane


def test_help_flags_and_theme(capsys, settings):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--config", "--train", "--data", "--backend", "--device", "--theme", "--runs-dir"):
        assert flag in out
    for argv, line in (
        (["--theme", "no-such-theme"], "unknown theme"),
        (["--batch-size", "0"], "batch-size must be a positive integer"),
        (["--dtype", "float64"], "invalid choice"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and line in err and "Traceback" not in err
    assert LalApp(replace(settings, theme="nord")).theme == "nord"


@pytest.mark.slow
def test_delete_asks_first(settings, micro_cfg, tiny_corpus, threads):
    run_dir = trained_run(micro_cfg, tiny_corpus, settings.runs_dir)

    async def go():
        app = LalApp(settings, launcher=threads)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("5", "d")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("n")
            assert run_dir.is_dir()
            await pilot.press("d", "y")
            await pilot.pause()
            assert not run_dir.exists()
            assert app.query_one("#runs-table").row_count == 0

    asyncio.run(go())


@pytest.mark.asyncio
async def test_resume_key_continues_a_stopped_run(settings, micro_cfg, tiny_corpus, threads):
    stop = ev.StopRequest()

    def stop_early(event):
        if isinstance(event, ev.StepDone) and event.iteration == 2:
            stop.set("test")

    from lal_core.training.train import Trainer

    first = Trainer(
        RunRequest(micro_cfg, FAST, data=tiny_corpus, runs_dir=settings.runs_dir),
        on_event=stop_early,
        stop=stop,
    ).run_training()
    assert first.status == "stopped"
    requests: list = []
    app = LalApp(settings, launcher=threads)
    resume = RunsPane.ResumeRequested
    hook = lambda m: requests.append(m) if isinstance(m, resume) else None  # noqa: E731
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        await pilot.press("5", "u")
        await wait_until(pilot, lambda: job(app, "train") is not None, timeout=10)
        await job(app, "train").wait()
        assert job(app, "train").state == WorkerState.SUCCESS
    assert [m.path for m in unique(requests)] == [first.run_dir]  # u asked, the app resumed
    info = RunDir(first.run_dir).read()
    assert info.status == "completed" and info.iteration == FAST.max_iters
    assert info.resumed[0].iteration == 3


@pytest.mark.asyncio
async def test_lal_tui_flags_reach_the_trainer(isolated_home, tiny_corpus, monkeypatch, threads):
    argv = ["--lr", "1e-3", "--warmup-iters", "7", "--dropout", "0.2", "--device", "cpu"]
    argv += ["--no-compile", "--dtype", "float32", "--recompute", "--peak-tflops", "12"]
    argv += ["--data", str(tiny_corpus), "--runs-dir", str(isolated_home / "runs")]
    settings = parse_settings(argv)
    assert settings.request.backend_options == {
        "dtype": "float32",
        "compile": False,
        "recompute": True,
    }
    made: list = []

    class Trainer:  # what `t` builds, recorded instead of trained
        def __init__(self, request, **options) -> None:
            made.append((request, options))

        def run_training(self):
            raise LalError("not training in this test")

    monkeypatch.setattr("lal_core.training.train.Trainer", Trainer)
    app = LalApp(settings, launcher=threads)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("t")
        await app.workers.wait_for_complete()  # training, and the backend probe
        await pilot.pause(0.2)
        # what the Setup pane shows and reports back is what the flags said
        assert app.settings.request == settings.request
    ((request, options),) = made
    model_cfg, train_cfg = request.model_config, request.train_config
    assert (model_cfg.name, model_cfg.dropout) == ("tiny", 0.2)
    assert (train_cfg.lr, train_cfg.warmup_iters) == (1e-3, 7)  # warmup: not a Setup field
    assert options.pop("stop") and options.pop("run_id").endswith("-tiny-torch")
    assert options == {}
    assert (request.backend, request.device, request.data) == ("torch", "cpu", str(tiny_corpus))
    assert (request.runs_dir, request.peak_tflops) == (isolated_home / "runs", 12.0)
    assert request.backend_options == {"dtype": "float32", "compile": False, "recompute": True}


@pytest.mark.asyncio
async def test_setup_fields_come_from_train_config(settings, threads):
    declared = {f.name: {"label": f.label, "help": f.help} for f in recipe_flags()}
    app = LalApp(settings, launcher=threads)
    async with app.run_test(size=SIZE) as pilot:
        children = list(app.query_one("#fields").children)
        shown = {
            field.id.removeprefix("field-"): (str(label.render()), field.tooltip)
            for label, field in zip(children[::2], children[1::2], strict=True)
        }
        assert list(shown) == [
            "batch_size", "micro_batch", "lr", "max_iters", "eval_interval", "patience",
            "dropout", "seed",
        ]  # fmt: skip
        for name, (label, help_text) in shown.items():
            if name != "dropout":  # the model's, not the recipe's
                assert (label, help_text) == (declared[name]["label"], declared[name]["help"])
        # and typed as declared: an int field refuses a fraction, a float field takes one
        app.query_one("#field-max_iters").value = "1.5"
        app.query_one("#field-lr").value = "0.5"
        await pilot.pause()
        error = str(app.query_one("#setup-error").render())
        assert f"{declared['max_iters']['label']} must be an integer" in error
        assert not app.query_one("#field-lr").has_class("-invalid")


def write_damaged_run(runs_dir: Path) -> Path:
    path = runs_dir / "20990101-000000-tiny-torch"
    path.mkdir(parents=True)
    (path / "run.json").write_text("{not json")
    return path


@pytest.mark.slow
@pytest.mark.asyncio
async def test_runs_pane_lists_a_damaged_run_and_deletes_it(
    settings, micro_cfg, tiny_corpus, monkeypatch, threads
):
    from lal_core.runs.folder import RunDir, read_entry

    notes = Notes(monkeypatch)
    good = trained_run(micro_cfg, tiny_corpus, settings.runs_dir)
    bad = write_damaged_run(settings.runs_dir)  # the newest: first in the table
    reason = read_entry(RunDir(bad)).error.rsplit(": ", 1)[-1]
    app = LalApp(settings, launcher=threads)
    async with app.run_test(size=SIZE) as pilot:
        # the run pickers leave it out: they offer the newest run that can be loaded
        assert app.query_one(SamplePane).picker.run_path == str(good)
        assert app.query_one(SFTPane).picker.run_path == str(good)
        await pilot.press("5")
        table = app.query_one("#runs-table")
        assert table.row_count == 2
        row = table.get_row(str(bad))
        assert (row[1], row[2], row[4], row[6]) == (bad.name, "?", "-", "damaged")
        info = str(app.query_one("#runs-info").render())
        assert "damaged" in info and reason in info
        # open, resume and compare refuse it with a word, not a traceback
        await pilot.press("enter", "u", "space", "down", "space", "c")
        warned = [m for m, severity in notes.seen if severity == "warning"]
        assert len(warned) == 3 and all(reason in m for m in warned)
        assert app.query_one(RunsPane).shown == [] and job(app, "train") is None
        await pilot.press("up", "d")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await pilot.pause()
        assert not bad.exists() and good.is_dir()
        assert table.row_count == 1 and "damaged" not in str(app.query_one("#runs-info").render())


@pytest.mark.slow
@pytest.mark.asyncio
async def test_e_reports_on_a_run_in_its_own_process_and_again_cancels(
    settings, micro_cfg, tiny_corpus, threads
):
    from lal_core.quality.report_file import read_report

    run = RunDir(trained_run(micro_cfg, tiny_corpus, settings.runs_dir))
    progress: list[ReportProgress] = []
    hook = lambda m: progress.append(m) if isinstance(m, ReportProgress) else None  # noqa: E731
    app = LalApp(settings, launcher=threads)
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        info = app.query_one("#runs-info")
        await pilot.press("5", "e")
        await wait_until(pilot, lambda: progress, timeout=120)  # the child is drawing samples
        await pilot.press("e")  # again: cancel
        await job(app, "report").wait()
        await pilot.pause()
        assert "report cancelled" in str(info.render()) and read_report(run) is None
        progress.clear()
        await pilot.press("e")
        await wait_until(pilot, lambda: "saved" in str(info.render()), timeout=180)
        assert progress[-1].total == 10  # 5 prompts x (best, final)
        report = read_report(run)
        assert [c.label for c in report.columns] == ["best", "final"]
        assert "report: best: loss" in str(info.render())
        await pilot.press("enter")  # opening the run shows its last report too
        assert "report: best: loss" in str(info.render())


@pytest.mark.slow
@pytest.mark.asyncio
async def test_s_saves_the_curves_on_screen_as_a_picture_in_the_run_folder(
    settings, micro_cfg, tiny_corpus, monkeypatch, threads
):
    from lal_core.runs.records import RunRecord

    notes = Notes(monkeypatch)
    monkeypatch.setenv("SSH_CONNECTION", "10.0.0.1 50000 10.0.0.2 22")  # a dashboard over SSH
    first = trained_run(micro_cfg, tiny_corpus, settings.runs_dir, max_iters=4)
    second = trained_run(micro_cfg, tiny_corpus, settings.runs_dir, max_iters=4, seed=1)
    empty = RunDir.create(micro_cfg.name, "torch", settings.runs_dir)  # newest: the first row
    empty.write(RunRecord(run_id=empty.run_id, model_config=micro_cfg, status="stopped"))
    app = LalApp(settings, launcher=threads)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5", "s")  # the highlighted run has no evals yet: one line, no file
        await job(app, "picture").wait()
        await pilot.pause()
        assert any("no evals yet" in m for m in notes.errors())
        assert not (empty.path / "curves.png").exists()
        await pilot.press("down", "space", "down", "space", "c", "s")  # the two overlaid
        await job(app, "picture").wait()
        await wait_until(pilot, lambda: any(m.startswith("saved ") for m, _ in notes.seen))
    picture = second / "curves.png"  # in the first marked run's folder
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not (first / "curves.png").exists()
    (saved,) = [m for m, _ in notes.seen if m.startswith("saved ")]
    assert str(picture) in saved and f":{picture} ." in saved  # the scp line to fetch it


@pytest.mark.slow
@pytest.mark.asyncio
async def test_runs_pane_shows_a_live_runs_best_val(settings, threads):
    evals: list = []

    def hook(message) -> None:
        if isinstance(message, TrainEvent) and isinstance(message.event, ev.EvalDone):
            evals.append(message.event)

    app = LalApp(micro(settings, LONG), launcher=threads)
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        await pilot.press("t")
        await wait_until(pilot, lambda: evals)  # the eval at iteration 0
        await pilot.pause(0.1)
        row = app.query_one("#runs-table").get_row(str(app.current_run_dir))
        assert (row[4], row[5], row[6]) == (f"{evals[0].best_val:.4f}", "0", "running")
        await pilot.press("x")
        await job(app, "train").wait()
