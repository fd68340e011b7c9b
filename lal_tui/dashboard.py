"""The dashboard's frame: the five panes, the settings, and what is not a run's lifecycle.

The app composes the five panes and owns the settings. A pane asks for something by posting
its own message (`SFTPane.FineTuneRequested`, `RunsPane.ResumeRequested`, ...), handled with
`@on`; the app passes what a pane needs down to it and calls its methods, a pane never calls
the app. Work runs as jobs on thread workers (`lal_tui.jobs`) that only post messages
(`lal_tui.messages`); every change to the screen happens in the app's handlers.

`Dashboard` holds the panes, the settings and corpus count, sampling, chat answers and
deleting a run; `lal_tui.app.LalApp` builds on it with the runs: starting, following,
stopping, quitting.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.timer import Timer
from textual.widgets import TabbedContent, TabPane

from lal_core.errors import LalError
from lal_core.runs.folder import RunDir, delete_run
from lal_tui import engine_jobs
from lal_tui.jobs import JobRunner
from lal_tui.messages import (
    CorpusInfo,
    EngineError,
    PictureSaved,
    ReportDone,
    ReportProgress,
    SampleEnded,
    SampleFigures,
    SampleFinished,
    SampleStarted,
    SampleToken,
    SFTAnswer,
)
from lal_tui.panes.runs import RunsPane
from lal_tui.panes.sample import SamplePane
from lal_tui.panes.setup import SetupPane
from lal_tui.panes.sft import SFTPane
from lal_tui.panes.train import TrainPane
from lal_tui.screens.confirm import ConfirmScreen
from lal_tui.screens.help import HelpScreen
from lal_tui.settings import Settings
from lal_tui.widgets.key_footer import KeyFooter
from lal_tui.widgets.run_picker import read_runs

# the widget that takes focus when a pane is shown, so its keys work at once
PANE_FOCUS = {
    "setup": "#configs",
    "train": "#train-log",
    "sample": "#sample-scroll",
    "sft": "#sft-scroll",
    "runs": "#runs-table",
}
COUNT_AFTER_SECONDS = 0.4  # count the corpus once typing pauses: a path in full, not a prefix


class Dashboard(App):
    """The panes and all but the runs: `LalApp` adds those (t, x, q, --attach)."""

    CSS_PATH = "app.tcss"
    TITLE = "lal"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS = [
        Binding("1,f1", "show_pane('setup')", "Setup", show=False),
        Binding("2,f2", "show_pane('train')", "Train pane", show=False),
        Binding("3,f3", "show_pane('sample')", "Sample", show=False),
        Binding("4,f4", "show_pane('sft')", "SFT", show=False),
        Binding("5,f5", "show_pane('runs')", "Runs", show=False),
        # t, x and q act on runs: `LalApp`'s actions
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
        self._models = engine_jobs.ModelCache()
        self._count_timer: Timer | None = None
        if self.settings.theme:
            self.theme = self.settings.theme

    def compose(self) -> ComposeResult:
        runs_dir = self.settings.runs_dir
        watch = self.settings.train_now or self.settings.attach is not None
        with TabbedContent(initial="train" if watch else "setup", id="panes"):
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
        yield KeyFooter()

    def on_mount(self) -> None:
        self.focus_pane(self.active_pane)
        self.count_corpus()

    def on_unmount(self) -> None:
        # however the app ends, it stops its jobs (following a run too); the runs go on
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
            self.query_one(TrainPane).redraw_soon()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def running(self, group: str) -> bool:
        """Whether the group's job goes on: for "train" and "sft", its pane follows a live run."""
        return self.jobs.running(group)

    def runs_changed(self, select: str | None = None) -> None:
        """A run started, ended, or was fine-tuned or deleted: every list of runs shows the
        runs folder as it is now (read once for all of them)."""
        runs = read_runs(self, self.settings.runs_dir)
        self.query_one(RunsPane).refresh_runs(runs)
        self.query_one(SamplePane).picker.reload(select, runs)
        self.query_one(SFTPane).picker.reload(select, runs)

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
        elif message.source == "report":
            self.query_one(RunsPane).info(line)

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
            message.prompt,
            message.checkpoint.parent.name + "/" + message.checkpoint.name,
            message.samples,
        )

    @on(SampleEnded)
    def sample_ended(self, message: SampleEnded) -> None:
        self.query_one(SamplePane).add_sample(message.row, message.seed, message.text)

    @on(SampleFigures)
    def sample_figures(self, message: SampleFigures) -> None:
        self.query_one(SamplePane).show_figures(message.line)

    @on(SampleToken)
    def sample_token(self, message: SampleToken) -> None:
        self.query_one(SamplePane).add_token(message.text, message.prob)

    @on(SampleFinished)
    def sample_finished(self, message: SampleFinished) -> None:
        self.query_one(SamplePane).finish(message.tokens, message.seconds, message.stopped)
        self.refresh_bindings()

    # -- SFT questions and deleting runs ------------------------------------------------------
    @on(SFTPane.AskRequested)
    def ask(self, message: SFTPane.AskRequested) -> None:
        job = engine_jobs.answering(
            message.run_path, message.question, message.kinds, message.seed, self.settings.request
        )
        self.jobs.start("ask", job)

    @on(SFTAnswer)
    def sft_answer(self, message: SFTAnswer) -> None:
        self.query_one(SFTPane).show_answer(message.which, message.question, message.answer)

    # -- pictures of runs --------------------------------------------------------------------
    @on(RunsPane.PictureRequested)
    def save_picture(self, message: RunsPane.PictureRequested) -> None:
        self.jobs.start("picture", engine_jobs.saving_picture(message.paths))

    @on(PictureSaved)
    def picture_saved(self, message: PictureSaved) -> None:
        self.notify(f"saved {message.path}{fetch_hint(message.path)}", title="picture", timeout=10)

    @on(RunsPane.ReportRequested)
    def report(self, message: RunsPane.ReportRequested) -> None:
        if self.jobs.stop("report", "cancelled"):
            self.query_one(RunsPane).info("report cancelled; nothing was saved")
            return
        self.query_one(RunsPane).info(f"report on {message.path.name}: starting…")
        self.jobs.start("report", engine_jobs.reporting(message.path))

    @on(ReportProgress)
    def report_progress(self, message: ReportProgress) -> None:
        if self.jobs.stopping("report"):
            return  # posted before the cancel was seen: the pane says "cancelled" now
        m = message
        self.query_one(RunsPane).report_progress(m.path, m.done, m.total, m.what)

    @on(ReportDone)
    def report_done(self, message: ReportDone) -> None:
        self.query_one(RunsPane).report_done(message.path)
        self.notify(f"report on {message.path.name} saved in its report.json", title="report")

    @on(RunsPane.DeleteRequested)
    def delete(self, message: RunsPane.DeleteRequested) -> None:
        if RunDir(message.path).writer() is not None:
            self.notify("that run is being written now; stop it first", severity="warning")
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


def fetch_hint(path: Path) -> str:
    """Over SSH the file is on the remote machine: the command that copies it to this one."""
    if not os.environ.get("SSH_CONNECTION"):
        return ""
    return f"; it is on {socket.gethostname()}: scp {socket.gethostname()}:{path} ."
