"""The lal dashboard: configure, train, watch, sample and fine-tune from one terminal.

    uv run lal-tui [--config tiny] [--train] [--data PATH] [--backend torch] [--theme NAME]

The engine runs in thread workers started on this App (`@work(thread=True, exclusive=True)`).
A worker only posts Messages (see `lal_tui.messages`) wrapping the engine's events; every
change to the screen happens in the handlers below, on the app's own thread.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from lal_core.errors import LalError
from lal_core.events import (
    Event,
    RunFailed,
    RunFinished,
    RunStarted,
    StopRequest,
)
from lal_tui.messages import (
    CorpusInfo,
    CorpusStats,
    EngineError,
    SampleFinished,
    SampleStarted,
    SampleToken,
    SFTAnswer,
    SFTEnded,
    SFTEvent,
    TrainEnded,
    TrainEvent,
)
from lal_tui.panes.runs import RunsPane
from lal_tui.panes.sample import SamplePane
from lal_tui.panes.setup import SetupPane
from lal_tui.panes.sft import SFTPane
from lal_tui.panes.train import TrainPane
from lal_tui.screens.confirm import ConfirmScreen
from lal_tui.screens.help import HelpScreen
from lal_tui.settings import Settings

PANES = ("setup", "train", "sample", "sft", "runs")
# the widget that takes focus when a pane is shown, so its keys work at once
PANE_FOCUS = {
    "setup": "#configs",
    "train": "#train-log",
    "sample": "#sample-scroll",
    "sft": "#sft-scroll",
    "runs": "#runs-table",
}


def describe_error(exc: BaseException) -> str:
    """One line for a notification: a LalError as it is, anything else with its type."""
    if isinstance(exc, LalError):
        return str(exc)
    text = " ".join(str(exc).split()) or "no details"
    return f"{type(exc).__name__}: {text}"


class LalApp(App):
    """Configure, train, watch, sample and fine-tune a small GPT."""

    CSS_PATH = "app.tcss"
    TITLE = "lal"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS = [
        Binding("1,f1", "show_pane('setup')", "Setup", show=False),
        Binding("2,f2", "show_pane('train')", "Train pane", show=False),
        Binding("3,f3", "show_pane('sample')", "Sample", show=False),
        Binding("4,f4", "show_pane('sft')", "SFT", show=False),
        Binding("5,f5", "show_pane('runs')", "Runs", show=False),
        Binding("t", "train", "Train"),
        Binding("x", "stop", "Stop"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__()
        self.settings = settings or Settings()
        self.setup_error: str | None = None
        self.train_stop = StopRequest()
        self.sample_stop = StopRequest()
        self.sft_stop = StopRequest()
        self.train_worker: Worker | None = None
        self.sample_worker: Worker | None = None
        self.sft_worker: Worker | None = None
        self.current_run_dir: Path | None = None
        self.quit_pending = False
        self.engine_idle = threading.Event()  # set while no training or fine-tuning thread runs
        self.engine_idle.set()
        self._engine_threads = 0
        self._engine_lock = threading.Lock()
        self._sample_model: tuple[tuple, object] | None = None
        if self.settings.theme:
            self.theme = self.settings.theme

    def compose(self) -> ComposeResult:
        initial = "train" if self.settings.train_now else "setup"
        with TabbedContent(initial=initial, id="panes"):
            with TabPane("1 Setup", id="setup"):
                yield SetupPane(id="setup-pane")
            with TabPane("2 Train", id="train"):
                yield TrainPane(id="train-pane")
            with TabPane("3 Sample", id="sample"):
                yield SamplePane(id="sample-pane")
            with TabPane("4 SFT", id="sft"):
                yield SFTPane(id="sft-pane")
            with TabPane("5 Runs", id="runs"):
                yield RunsPane(id="runs-pane")
        yield Footer()

    def on_mount(self) -> None:
        self.focus_pane(self.active_pane)
        if self.settings.train_now:
            self.call_after_refresh(self.action_train)
        if not self.is_headless:
            # a closed terminal (SIGHUP) or `kill`: stop the run after its step, save, then exit
            loop = asyncio.get_running_loop()
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGHUP, self.hang_up)
                loop.add_signal_handler(signal.SIGTERM, self.terminate)

    def terminate(self) -> None:
        """SIGTERM: stop the run after its step, let it save, then quit."""
        self.quit_pending = True
        self.stop_everything("SIGTERM")
        self.maybe_quit()

    def hang_up(self) -> None:
        """SIGHUP: the terminal is gone (a dropped SSH link without tmux). Stop the run after
        its step and, once the engine thread has saved it, leave at once: Textual cannot shut
        down cleanly writing to a terminal that no longer exists (it blocks on the dead tty)."""
        self.stop_everything("SIGHUP")

        def exit_when_saved() -> None:
            self.engine_idle.wait()
            os._exit(128 + signal.SIGHUP)

        threading.Thread(target=exit_when_saved, daemon=True).start()

    def _engine_enter(self) -> None:
        with self._engine_lock:
            self._engine_threads += 1
            self.engine_idle.clear()

    def _engine_leave(self) -> None:
        with self._engine_lock:
            self._engine_threads -= 1
            if self._engine_threads == 0:
                self.engine_idle.set()

    def stop_everything(self, reason: str) -> None:
        for request in (self.train_stop, self.sft_stop, self.sample_stop):
            request.set(reason)

    def on_unmount(self) -> None:
        # however the app ends, a run still going stops after its step and saves its checkpoints
        self.stop_everything("quit")

    # -- panes --------------------------------------------------------------------------------
    @property
    def active_pane(self) -> str:
        return self.query_one(TabbedContent).active

    def pane_visible(self, name: str) -> bool:
        return self.active_pane == name

    def focus_pane(self, name: str) -> None:
        widget = self.query_one_optional(PANE_FOCUS[name])
        if widget is not None:
            widget.focus()

    def action_show_pane(self, name: str) -> None:
        self.query_one(TabbedContent).active = name
        self.focus_pane(name)
        self.refresh_bindings()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.refresh_bindings()
        if event.pane.id == "train":
            self.query_one(TrainPane).dirty = True

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "train":
            return not self.running("train")
        if action == "stop":
            return any(self.running(g) for g in ("train", "sample", "sft"))
        return True

    def running(self, group: str) -> bool:
        worker = {"train": self.train_worker, "sample": self.sample_worker}.get(
            group, self.sft_worker
        )
        return worker is not None and worker.state in (WorkerState.PENDING, WorkerState.RUNNING)

    def is_training_run(self, path: Path) -> bool:
        return (
            self.running("train")
            and self.current_run_dir is not None
            and (Path(path).resolve() == self.current_run_dir.resolve())
        )

    def runs_changed(self, select: str | None = None) -> None:
        self.query_one(RunsPane).refresh_runs()
        self.query_one(SamplePane).refresh_runs(select)
        self.query_one(SFTPane).refresh_runs(select)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand(
            "Start training", "Train with the Setup pane's settings", self.action_train
        )
        yield SystemCommand("Stop", "Stop the run or generation in this pane", self.action_stop)
        for name in PANES:
            yield SystemCommand(
                f"Show {name}",
                f"Switch to the {name} pane",
                lambda n=name: self.action_show_pane(n),
            )
        train = self.query_one(TrainPane)
        yield SystemCommand(
            "Toggle smoothing", "Smooth the step-loss line (EMA)", train.action_toggle_smoothing
        )
        yield SystemCommand("Toggle log scale", "Log-scale loss axis", train.action_toggle_log)
        yield SystemCommand("Help", "Keys, by pane", self.action_help)

    # -- training -----------------------------------------------------------------------------
    def action_train(self) -> None:
        if self.running("train"):
            self.notify("a run is already training; x stops it", severity="warning")
            return
        error = self.query_one(SetupPane).validate_fields()
        if error:
            self.notify(error, title="fix the setup first", severity="error")
            self.action_show_pane("setup")
            return
        settings = self.settings
        try:
            model_cfg = settings.model_config()
        except LalError as exc:
            self.notify(str(exc), severity="error")
            return
        self.train_stop = StopRequest()
        train = self.query_one(TrainPane)
        train.note(
            f"starting {model_cfg.name} on {settings.backend} (loading data and model)…",
            state="starting",
        )
        self.action_show_pane("train")

        def make_trainer(on_event, stop):
            from lal_core.trainer import Trainer

            return Trainer(
                model_cfg,
                settings.train,
                backend=settings.backend,
                device=settings.device,
                data=settings.data,
                runs_root=settings.runs_dir,
                on_event=on_event,
                stop=stop,
            )

        self.train_worker = self.run_training(make_trainer, self.train_stop)
        self.refresh_bindings()

    def resume_run(self, run_path: Path) -> None:
        """Continue a stopped or interrupted run from its last saved state (Runs pane: u)."""
        if self.running("train"):
            self.notify("a run is already training; x stops it", severity="warning")
            return
        self.train_stop = StopRequest()
        self.query_one(TrainPane).note(f"resuming {run_path.name}…", state="starting")
        self.action_show_pane("train")
        runs_dir = self.settings.runs_dir

        def make_trainer(on_event, stop):
            from lal_core.trainer import Trainer

            return Trainer.resume(run_path, runs_dir, on_event=on_event, stop=stop)

        self.train_worker = self.run_training(make_trainer, self.train_stop)
        self.refresh_bindings()

    @work(thread=True, exclusive=True, group="train", exit_on_error=False)
    def run_training(self, make_trainer, stop):
        """The engine's training loop, on a worker thread; it only posts messages."""
        failed = False

        def on_event(event: Event) -> None:
            nonlocal failed
            failed = failed or isinstance(event, RunFailed)
            self.post_message(TrainEvent(event))

        status, run_dir = None, None
        self._engine_enter()
        try:
            result = make_trainer(on_event, stop).run_training()
            status, run_dir = result.status, result.run_dir
        except Exception as exc:  # noqa: BLE001 - every failure becomes a notification
            if not failed:
                self.post_message(EngineError("train", describe_error(exc)))
            status = "failed"
        finally:
            self._engine_leave()
            self.post_message(TrainEnded(status, run_dir))
        return status

    def on_train_event(self, message: TrainEvent) -> None:
        event = message.event
        self.query_one(TrainPane).record(event)
        if isinstance(event, RunStarted):
            self.current_run_dir = event.run_dir
            self.runs_changed()
        elif isinstance(event, RunFailed):
            self.notify(event.message, title="training failed", severity="error", timeout=10)
        elif isinstance(event, RunFinished):
            self.notify(event.line, title=event.status.replace("_", " "), timeout=8)

    def on_train_ended(self, message: TrainEnded) -> None:
        pane = self.query_one(TrainPane)
        if message.status == "failed" and pane.state in ("starting", "running"):
            pane.note("training failed (see the notification)", state="failed")
        self.runs_changed(str(message.run_dir) if message.run_dir else None)
        self.refresh_bindings()
        self.maybe_quit()

    def on_engine_error(self, message: EngineError) -> None:
        self.notify(message.message, title=f"{message.source} error", severity="error", timeout=10)
        if message.source == "train":
            self.query_one(TrainPane).note(f"error: {message.message}", state="failed")
        elif message.source == "sample":
            self.query_one(SamplePane).set_status(f"error: {message.message}")
        elif message.source == "sft":
            self.query_one(SFTPane).set_status(f"error: {message.message}")

    def action_stop(self) -> None:
        pane = self.active_pane
        if pane == "sample" and self.running("sample"):
            self.sample_stop.set("stopped from the dashboard")
        elif pane == "sft" and self.running("sft"):
            self.sft_stop.set("stopped from the dashboard")
            self.query_one(SFTPane).set_status("stopping after this batch…")
        elif self.running("train"):
            self.train_stop.set("stopped from the dashboard")
            self.query_one(TrainPane).note("stopping after this step…", state="stopping")
        elif self.running("sft"):
            self.sft_stop.set("stopped from the dashboard")
        elif self.running("sample"):
            self.sample_stop.set("stopped from the dashboard")
        else:
            self.notify("nothing is running")

    # -- corpus -------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="corpus", exit_on_error=False)
    def count_corpus(self, request: str) -> None:
        from lal_core.data import load_corpus, resolve_corpus

        try:
            path = resolve_corpus(request or None, download=False)
            corpus = load_corpus(path)
            stats = CorpusStats(corpus.path, len(corpus.tokens), len(corpus.train), len(corpus.val))
            self.post_message(CorpusInfo(request, stats, None))
        except Exception as exc:  # noqa: BLE001
            self.post_message(CorpusInfo(request, None, describe_error(exc)))

    def on_corpus_info(self, message: CorpusInfo) -> None:
        if message.request != (self.settings.data or ""):
            return  # an answer for a path the user has since changed
        setup = self.query_one(SetupPane)
        if message.stats is None:
            setup.show_corpus(f"⚠ {message.error}", error=True)
        else:
            s = message.stats
            setup.show_corpus(
                f"{s.path}: {s.tokens:,} tokens ({s.train_tokens:,} train / {s.val_tokens:,} val)",
                error=False,
            )

    # -- sampling -----------------------------------------------------------------------------
    def action_generate(self) -> None:
        pane = self.query_one(SamplePane)
        if self.running("sample"):
            self.notify("already generating; x stops it", severity="warning")
            return
        try:
            request = pane.request()
        except LalError as exc:
            self.notify(str(exc), severity="error")
            return
        self.sample_stop = StopRequest()
        pane.set_status("loading the checkpoint…")
        self.sample_worker = self.run_sampling(
            request,
            self.settings.backend,
            self.settings.device,
            self.settings.runs_dir,
            self.sample_stop,
        )
        self.refresh_bindings()

    def _sampling_model(self, path: Path, backend: str, device: str | None):
        """The loaded checkpoint, kept between generations while the file is unchanged."""
        from lal_core.sampling import load_for_sampling

        key = (str(path), path.stat().st_mtime_ns, backend, device)
        if self._sample_model is None or self._sample_model[0] != key:
            self._sample_model = (key, load_for_sampling(path, backend, device))
        return self._sample_model[1]

    @work(thread=True, exclusive=True, group="sample", exit_on_error=False)
    def run_sampling(self, request: dict, backend: str, device, runs_dir, stop: StopRequest):
        from lal_core.runs import resolve_checkpoint
        from lal_core.sampling import check_sampling_args, stream

        count, started = 0, time.perf_counter()
        try:
            check_sampling_args(request["temperature"], request["top_k"], request["tokens"])
            path = resolve_checkpoint(request["ref"], request["kind"], runs_dir)
            model = self._sampling_model(path, backend, device)
            self.post_message(SampleStarted(path, request["prompt"]))
            started = time.perf_counter()
            for token in stream(
                model,
                request["prompt"],
                request["tokens"],
                request["temperature"],
                request["top_k"],
                request["seed"],
                stop=stop,
            ):
                count += 1
                self.post_message(SampleToken(token.text, token.prob))
            self.post_message(SampleFinished(count, time.perf_counter() - started, stop.is_set()))
        except Exception as exc:  # noqa: BLE001
            self.post_message(EngineError("sample", describe_error(exc)))

    def on_sample_started(self, message: SampleStarted) -> None:
        self.query_one(SamplePane).begin(
            message.prompt, message.checkpoint.parent.name + "/" + message.checkpoint.name
        )

    def on_sample_token(self, message: SampleToken) -> None:
        self.query_one(SamplePane).add_token(message.text, message.prob)

    def on_sample_finished(self, message: SampleFinished) -> None:
        self.query_one(SamplePane).finish(message.tokens, message.seconds, message.stopped)
        self.refresh_bindings()

    # -- SFT ----------------------------------------------------------------------------------
    def start_sft(self, run_path: str) -> None:
        if self.running("sft"):
            self.notify("fine-tuning is already running; x stops it", severity="warning")
            return
        if self.is_training_run(Path(run_path)):
            self.notify("that run is still training; wait for it to finish", severity="warning")
            return
        self.sft_stop = StopRequest()
        self.sft_worker = self.run_fine_tune(
            run_path,
            self.settings.backend,
            self.settings.device,
            self.settings.runs_dir,
            self.sft_stop,
        )
        self.refresh_bindings()

    @work(thread=True, exclusive=True, group="sft", exit_on_error=False)
    def run_fine_tune(self, run_path: str, backend: str, device, runs_dir, stop: StopRequest):
        from lal_core.sft import run_sft

        failed, status, checkpoint = False, None, None

        def on_event(event: Event) -> None:
            nonlocal failed
            failed = failed or isinstance(event, RunFailed)
            self.post_message(SFTEvent(event))

        self._engine_enter()
        try:
            result = run_sft(
                run_path,
                backend=backend,
                device=device,
                runs_root=runs_dir,
                on_event=on_event,
                stop=stop,
            )
            status, checkpoint = result.status, result.checkpoint
        except Exception as exc:  # noqa: BLE001
            if not failed:
                self.post_message(EngineError("sft", describe_error(exc)))
            status = "failed"
        finally:
            self._engine_leave()
            self.post_message(SFTEnded(status, checkpoint))
        return status

    @on(SFTEvent)
    def handle_sft_event(self, message: SFTEvent) -> None:
        self.query_one(SFTPane).record(message.event)
        if isinstance(message.event, RunFailed):
            self.notify(message.event.message, title="SFT failed", severity="error", timeout=10)

    @on(SFTEnded)
    def handle_sft_ended(self, message: SFTEnded) -> None:
        self.query_one(SFTPane).ended(message.status, message.checkpoint)
        self.runs_changed()
        self.refresh_bindings()
        self.maybe_quit()

    def ask(self, run_path: str, question: str, kinds: Sequence[str], seed: int) -> None:
        self.run_answers(
            run_path,
            question,
            tuple(kinds),
            seed,
            self.settings.backend,
            self.settings.device,
            self.settings.runs_dir,
        )

    @work(thread=True, exclusive=True, group="ask", exit_on_error=False)
    def run_answers(self, run_path, question, kinds, seed, backend, device, runs_dir):
        from lal_core.runs import resolve_checkpoint
        from lal_core.sampling import load_for_sampling
        from lal_core.sft import chat

        try:
            for kind in kinds:
                path = resolve_checkpoint(run_path, kind, runs_dir)
                model = load_for_sampling(path, backend, device)
                reply = chat(model, question, max_new_tokens=60, seed=seed)
                text = reply.text or "(nothing)"
                if not reply.ended:
                    text += "  [no <|end|>]"
                which = "before" if kind == "best" else "after"
                self.post_message(SFTAnswer(which, question, text))
        except Exception as exc:  # noqa: BLE001
            self.post_message(EngineError("sft", describe_error(exc)))

    @on(SFTAnswer)
    def handle_sft_answer(self, message: SFTAnswer) -> None:
        self.query_one(SFTPane).show_answer(message.which, message.question, message.answer)

    # -- quitting -----------------------------------------------------------------------------
    async def action_quit(self) -> None:
        if isinstance(self.screen, ConfirmScreen):
            return
        if not (self.running("train") or self.running("sft")):
            self.sample_stop.set("quit")
            self.exit()
            return

        def answer(stop: bool | None) -> None:
            if not stop:
                return
            self.quit_pending = True
            self.stop_everything("quit")
            self.query_one(TrainPane).note(
                "stopping after this step, then quitting…", state="stopping"
            )
            self.notify("stopping the run; checkpoints and metrics are being saved…")
            self.maybe_quit()

        self.push_screen(
            ConfirmScreen(
                "A run is in progress. Stop it (its checkpoints and metrics are saved) and quit?",
                yes="Stop and quit",
            ),
            answer,
        )

    def maybe_quit(self) -> None:
        if self.quit_pending and not (self.running("train") or self.running("sft")):
            self.exit()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            self.refresh_bindings()
            if event.state == WorkerState.ERROR:  # a bug in a worker: say so, keep running
                self.notify(describe_error(event.worker.error), severity="error")
            self.maybe_quit()


def build_parser() -> argparse.ArgumentParser:
    from lal_core.backends import BACKENDS
    from lal_core.config import MODEL_CONFIGS

    parser = argparse.ArgumentParser(
        prog="lal-tui",
        description="The lal dashboard: configure, train, watch, sample and fine-tune a small "
        "GPT from one terminal. Keys: 1-5 panes, t train, x stop, ? help, q quit.",
        epilog="Over SSH, run it in tmux so a dropped link does not end a run: "
        "tmux new -s lal 'uv run lal-tui --config tiny --train'",
    )
    parser.add_argument(
        "--config",
        default="tiny",
        choices=list(MODEL_CONFIGS),
        help="model config to select (default: tiny)",
    )
    parser.add_argument(
        "--train", action="store_true", help="start training at once with the given settings"
    )
    parser.add_argument(
        "--data",
        default=None,
        help="corpus: a UTF-8 text file (default: $LAL_DATA, then "
        "data/tinyshakespeare/input.txt, downloaded if missing)",
    )
    parser.add_argument("--backend", default="torch", choices=list(BACKENDS))
    parser.add_argument(
        "--device", default=None, help="cuda, mps or cpu (default: the best present)"
    )
    parser.add_argument(
        "--theme",
        default=None,
        help="Textual theme, e.g. textual-dark, nord, gruvbox, "
        "ansi-dark for 16-colour terminals (ctrl+p changes it too)",
    )
    parser.add_argument(
        "--runs-dir", default=None, help="where run folders go (default: checkpoints/)"
    )
    for flag, kind, what in (
        ("--max-iters", int, "max iterations"),
        ("--batch-size", int, "batch size"),
        ("--lr", float, "peak learning rate"),
        ("--eval-interval", int, "iterations between evals"),
        ("--patience", int, "evals without improvement before early stop"),
        ("--seed", int, "random seed"),
    ):
        parser.add_argument(flag, type=kind, default=None, help=what)
    parser.add_argument("--dropout", type=float, default=None, help="dropout")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    from dataclasses import replace

    from lal_core.config import TrainConfig

    keys = ("max_iters", "batch_size", "lr", "eval_interval", "patience", "seed")
    overrides = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    train = replace(TrainConfig(), **overrides).validate()
    return Settings(
        config=args.config,
        train=train,
        dropout=args.dropout or 0.0,
        data=args.data,
        backend=args.backend,
        device=args.device,
        runs_dir=Path(args.runs_dir) if args.runs_dir else None,
        train_now=args.train,
        theme=args.theme,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
        settings.model_config()
    except LalError as exc:
        parser.error(str(exc))
    probe = App()
    if args.theme and args.theme not in probe.available_themes:
        parser.error(
            f"unknown theme {args.theme!r}; choose one of: "
            + ", ".join(sorted(probe.available_themes))
        )
    app = LalApp(settings)
    app.run()
    app.stop_everything("quit")
    return app.return_code or 0


if __name__ == "__main__":
    raise SystemExit(main())
