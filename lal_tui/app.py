"""The lal dashboard: configure, train, watch, sample and fine-tune from one terminal.

    uv run lal-tui [--config tiny] [--train] [--data PATH] [--backend torch] [--theme NAME]

The app composes the five panes and owns the settings. A pane asks for something by posting
its own message (`SFTPane.FineTuneRequested`, `RunsPane.ResumeRequested`, ...), handled here
with `@on`; the app passes what a pane needs down to it and calls its methods, a pane never
calls the app. Engine work runs as jobs on thread workers (`lal_tui.jobs`) that only post
messages (`lal_tui.messages`); every change to the screen happens in the handlers below.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from lal_core.errors import LalError
from lal_core.events import EvalDone, RunFailed, RunFinished, RunStarted
from lal_core.runs import RunDir, delete_run
from lal_tui import engine_jobs, signals
from lal_tui.args import parse_settings
from lal_tui.commands import dashboard_commands
from lal_tui.jobs import Job, JobRunner, describe_error
from lal_tui.messages import (
    CorpusInfo,
    EngineError,
    JobEnded,
    SampleFinished,
    SampleStarted,
    SampleToken,
    SFTAnswer,
    SFTEvent,
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

# the widget that takes focus when a pane is shown, so its keys work at once
PANE_FOCUS = {
    "setup": "#configs",
    "train": "#train-log",
    "sample": "#sample-scroll",
    "sft": "#sft-scroll",
    "runs": "#runs-table",
}
COUNT_AFTER_SECONDS = 0.4  # count the corpus once typing pauses: a path in full, not a prefix
STOPPED_HERE = "stopped from the dashboard"


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
        self.setup_error: str | None = None  # the Setup pane's first problem: t refuses to train
        self.jobs = JobRunner(self)
        self.current_run_dir: Path | None = None
        self.quit_pending = False
        self._models = engine_jobs.ModelCache()
        self._count_timer: Timer | None = None
        if self.settings.theme:
            self.theme = self.settings.theme

    def compose(self) -> ComposeResult:
        runs_dir = self.settings.runs_dir
        with TabbedContent(initial="train" if self.settings.train_now else "setup", id="panes"):
            with TabPane("1 Setup", id="setup"):
                yield SetupPane(self.settings, id="setup-pane")
            with TabPane("2 Train", id="train"):
                yield TrainPane(id="train-pane")
            with TabPane("3 Sample", id="sample"):
                yield SamplePane(runs_dir, id="sample-pane")
            with TabPane("4 SFT", id="sft"):
                yield SFTPane(runs_dir, id="sft-pane")
            with TabPane("5 Runs", id="runs"):
                yield RunsPane(runs_dir, id="runs-pane")
        yield Footer()

    def on_mount(self) -> None:
        self.focus_pane(self.active_pane)
        self.count_corpus()
        if self.settings.train_now:
            self.call_after_refresh(self.action_train)
        if not self.is_headless:
            signals.install(self.jobs, self.quit_after_saving)

    def on_unmount(self) -> None:
        # however the app ends, a run still going stops after its step and saves its checkpoints
        self.jobs.stop_all("quit")

    # -- panes --------------------------------------------------------------------------------
    @property
    def active_pane(self) -> str:
        return self.query_one(TabbedContent).active

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
        return self.jobs.running(group)

    def is_training(self, run: Path | str) -> bool:
        """Whether `run` is the run this dashboard is training now."""
        current = self.current_run_dir
        return (
            self.running("train")
            and current is not None
            and Path(run).resolve() == current.resolve()
        )

    def runs_changed(self, select: str | None = None) -> None:
        """A run started, ended, or was fine-tuned or deleted: every list of runs reads again."""
        self.query_one(RunsPane).refresh_runs()
        self.query_one(SamplePane).picker.reload(select)
        self.query_one(SFTPane).picker.reload(select)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from dashboard_commands(
            self.action_train,
            self.action_stop,
            self.action_show_pane,
            self.action_help,
            self.query_one(TrainPane),
        )

    # -- settings and the corpus --------------------------------------------------------------
    @on(SetupPane.SettingsChanged)
    def settings_changed(self, message: SetupPane.SettingsChanged) -> None:
        self.setup_error = message.error
        if message.error is not None:
            return  # keep the last good settings; t refuses to train until the fields are fixed
        try:
            self.settings = self.settings.choose(
                message.config,
                message.dropout,
                train_config=message.train_config,
                backend=message.backend,
                device=message.device,
            )
        except LalError as exc:
            self.setup_error = str(exc)

    @on(SetupPane.CorpusChanged)
    def corpus_changed(self, message: SetupPane.CorpusChanged) -> None:
        if message.path == self.settings.request.data:
            return
        self.settings = self.settings.with_data(message.path)
        if self._count_timer is not None:
            self._count_timer.stop()
        self._count_timer = self.set_timer(COUNT_AFTER_SECONDS, self.count_corpus)

    def count_corpus(self) -> None:
        self._count_timer = None
        self.query_one(SetupPane).show_corpus("counting tokens…", error=False)
        self.jobs.start("corpus", engine_jobs.counting(self.settings.request.data))

    @on(CorpusInfo)
    def corpus_counted(self, message: CorpusInfo) -> None:
        if message.request != self.settings.request.data:
            return  # an answer for a path the user has since changed
        s = message.stats
        self.query_one(SetupPane).show_corpus(
            f"{s.path}: {s.tokens:,} tokens ({s.train_tokens:,} train / {s.val_tokens:,} val)",
            error=False,
        )

    # -- training -----------------------------------------------------------------------------
    def action_train(self) -> None:
        if self.running("train"):
            self.notify("a run is already training; x stops it", severity="warning")
            return
        if self.setup_error:
            self.notify(self.setup_error, title="fix the setup first", severity="error")
            self.action_show_pane("setup")
            return
        request = self.settings.request
        what = f"{request.model_config.name} on {request.backend}"
        self.start_training(
            engine_jobs.training(request), f"starting {what} (loading data and model)…"
        )

    @on(RunsPane.ResumeRequested)
    def resume_run(self, message: RunsPane.ResumeRequested) -> None:
        if self.running("train"):
            self.notify("a run is already training; x stops it", severity="warning")
            return
        job = engine_jobs.resuming(message.path, self.settings.runs_dir)
        self.start_training(job, f"resuming {message.path.name}…")

    def start_training(self, job: Job, line: str) -> None:
        self.query_one(TrainPane).note(line, state="starting")
        self.action_show_pane("train")
        self.jobs.start("train", job, saves=True)
        self.refresh_bindings()

    @on(TrainEvent)
    def train_event(self, message: TrainEvent) -> None:
        event = message.event
        self.query_one(TrainPane).record(event)
        if isinstance(event, RunStarted):
            self.current_run_dir = event.run_dir
            self.runs_changed()
        elif isinstance(event, EvalDone):
            self.query_one(RunsPane).refresh_runs()  # the live run's best val and iteration
        elif isinstance(event, RunFailed):
            self.notify(event.message, title="training failed", severity="error", timeout=10)
        elif isinstance(event, RunFinished):
            self.notify(event.line, title=event.status.replace("_", " "), timeout=8)

    @on(JobEnded)
    def job_ended(self, message: JobEnded) -> None:
        result = message.result
        if message.group == "train":
            pane = self.query_one(TrainPane)
            if result is None and pane.state in ("starting", "running"):
                pane.note("training failed (see the notification)", state="failed")
            self.runs_changed(str(result.run_dir) if result is not None else None)
        elif message.group == "sft":
            self.query_one(SFTPane).ended(result.checkpoint if result is not None else None)
            self.runs_changed()
        self.refresh_bindings()
        self.maybe_quit()

    @on(EngineError)
    def engine_error(self, message: EngineError) -> None:
        if not self.jobs.is_current(message.worker):
            return  # a superseded job's late answer (a corpus path since retyped)
        line = f"error: {message.message}"
        if message.source == "corpus":  # shown where the path is typed, as it is typed
            self.query_one(SetupPane).show_corpus(f"⚠ {message.message}", error=True)
            return
        self.notify(message.message, title=f"{message.source} error", severity="error", timeout=10)
        if message.source == "train":
            self.query_one(TrainPane).note(line, state="failed")
        elif message.source == "sample":
            self.query_one(SamplePane).set_status(line)
        elif message.source in ("sft", "ask"):
            self.query_one(SFTPane).set_status(line)

    def action_stop(self) -> None:
        """Stop what runs in this pane, else training, else anything that runs."""
        pane, jobs = self.active_pane, self.jobs
        if pane == "sample" and jobs.stop("sample", STOPPED_HERE):
            return
        if pane == "sft" and jobs.stop("sft", STOPPED_HERE):
            self.query_one(SFTPane).set_status("stopping after this batch…")
        elif jobs.stop("train", STOPPED_HERE):
            self.query_one(TrainPane).note("stopping after this step…", state="stopping")
        elif not (jobs.stop("sft", STOPPED_HERE) or jobs.stop("sample", STOPPED_HERE)):
            self.notify("nothing is running")

    # -- sampling -----------------------------------------------------------------------------
    @on(SamplePane.GenerateRequested)
    def generate(self, message: SamplePane.GenerateRequested) -> None:
        if self.running("sample"):
            self.notify("already generating; x stops it", severity="warning")
            return
        self.query_one(SamplePane).set_status("loading the checkpoint…")
        job = engine_jobs.sampling(message.request, self.settings.request, self._models)
        self.jobs.start("sample", job)
        self.refresh_bindings()

    @on(SampleStarted)
    def sample_started(self, message: SampleStarted) -> None:
        self.query_one(SamplePane).begin(
            message.prompt, message.checkpoint.parent.name + "/" + message.checkpoint.name
        )

    @on(SampleToken)
    def sample_token(self, message: SampleToken) -> None:
        self.query_one(SamplePane).add_token(message.text, message.prob)

    @on(SampleFinished)
    def sample_finished(self, message: SampleFinished) -> None:
        self.query_one(SamplePane).finish(message.tokens, message.seconds, message.stopped)
        self.refresh_bindings()

    # -- SFT ----------------------------------------------------------------------------------
    @on(SFTPane.FineTuneRequested)
    def fine_tune(self, message: SFTPane.FineTuneRequested) -> None:
        if self.running("sft"):
            self.notify("fine-tuning is already running; x stops it", severity="warning")
            return
        if self.is_training(message.run_path):
            self.notify("that run is still training; wait for it to finish", severity="warning")
            return
        job = engine_jobs.fine_tuning(message.run_path, self.settings.request)
        self.jobs.start("sft", job, saves=True)
        self.refresh_bindings()

    @on(SFTEvent)
    def sft_event(self, message: SFTEvent) -> None:
        self.query_one(SFTPane).record(message.event)
        if isinstance(message.event, RunFailed):
            self.notify(message.event.message, title="SFT failed", severity="error", timeout=10)

    @on(SFTPane.AskRequested)
    def ask(self, message: SFTPane.AskRequested) -> None:
        job = engine_jobs.answering(
            message.run_path, message.question, message.kinds, message.seed, self.settings.request
        )
        self.jobs.start("ask", job)

    @on(SFTAnswer)
    def sft_answer(self, message: SFTAnswer) -> None:
        self.query_one(SFTPane).show_answer(message.which, message.question, message.answer)

    # -- runs ---------------------------------------------------------------------------------
    @on(RunsPane.DeleteRequested)
    def delete(self, message: RunsPane.DeleteRequested) -> None:
        if self.is_training(message.path):
            self.notify("that run is training now; stop it first", severity="warning")
            return

        def done(confirmed: bool | None) -> None:
            if not confirmed:
                return
            try:
                delete_run(RunDir(message.path))
            except LalError as exc:
                self.notify(str(exc), severity="error")
                return
            self.notify(f"deleted {message.run_id}")
            self.runs_changed()

        question = f"Delete run {message.run_id} and its checkpoints?"
        self.push_screen(ConfirmScreen(question, yes="Delete"), done)

    # -- quitting -----------------------------------------------------------------------------
    async def action_quit(self) -> None:
        if isinstance(self.screen, ConfirmScreen):
            return
        if not (self.running("train") or self.running("sft")):
            self.jobs.stop_all("quit")
            self.exit()
            return

        def answer(stop: bool | None) -> None:
            if not stop:
                return
            self.quit_pending = True
            self.jobs.stop_all("quit")
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

    def quit_after_saving(self) -> None:
        """Quit once the running training or fine-tune has stopped and saved."""
        self.quit_pending = True
        self.maybe_quit()

    def maybe_quit(self) -> None:
        if self.quit_pending and not (self.running("train") or self.running("sft")):
            self.exit()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            self.refresh_bindings()
            if event.state == WorkerState.ERROR:  # a bug in a worker: say so, keep running
                self.notify(describe_error(event.worker.error), severity="error")
            self.maybe_quit()


def main(argv: Sequence[str] | None = None) -> int:
    """`lal-tui`: a bad flag is one line and exit status 2."""
    settings = parse_settings(argv, themes=list(App().available_themes))
    app = LalApp(settings)
    app.run()
    app.jobs.stop_all("quit")
    return app.return_code or 0


if __name__ == "__main__":
    raise SystemExit(main())
