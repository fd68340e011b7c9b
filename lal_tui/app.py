"""The lal dashboard: configure, train, watch, sample and fine-tune from one terminal.

    uv run lal-tui [--config tiny] [--train] [--attach [RUN]] [--data PATH] [--theme NAME]

`LalApp` composes the five panes (`lal_tui.panes`), owns the settings (`lal_tui.settings`) and
starts the work. A pane asks by posting its own message (`SFTPane.FineTuneRequested`, ...),
handled here with `@on`; the app passes down what a pane needs and calls its methods.

Work runs as jobs on thread workers (`lal_tui.work.jobs`) that post messages
(`lal_tui.work.messages`) to the pane that asked: the pane shows them (tokens, a run's events,
an error in its status line) and they bubble on to the app, which keeps what reaches past one
pane: notifications, the lists of runs, the keys on offer, quitting once the runs have saved.

A run is a process of its own that writes its folder (`lal_tui.work.launching`): the Train and
SFT panes only follow a run folder (`lal_tui.work.following`), whether it was started here, by
`lal train` elsewhere or before the dashboard opened, and `x` asks it to stop through its stop
file. Quitting, a closed terminal or `kill` end the dashboard, not the run.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from lal_core.errors import LalError
from lal_core.runs.events import EvalDone, RunFailed, RunFinished, RunStarted
from lal_core.runs.folder import RunDir
from lal_tui.commands import dashboard_commands
from lal_tui.panes.runs import RunsPane
from lal_tui.panes.sample import SamplePane
from lal_tui.panes.setup import SetupPane
from lal_tui.panes.sft import SFTPane
from lal_tui.panes.train import TrainPane
from lal_tui.screens.confirm import ChoiceScreen, QuitScreen
from lal_tui.screens.help import HelpScreen
from lal_tui.settings import Settings, parse_settings
from lal_tui.widgets.key_footer import KeyFooter
from lal_tui.widgets.run_picker import read_runs
from lal_tui.work import messages as msg
from lal_tui.work import signals, tasks
from lal_tui.work.following import RUN_JOBS, FollowedRuns, Launcher
from lal_tui.work.jobs import JobRunner, describe_error
from lal_tui.work.launching import Launch, ProcessLauncher

# the widget that takes focus when a pane is shown, so its keys work at once
PANE_FOCUS = {
    "setup": "#configs",
    "train": "#train-log",
    "sample": "#sample-scroll",
    "sft": "#sft-scroll",
    "runs": "#runs-table",
}
REAP_SECONDS = 2.0  # how often the runs started here are polled (an exited one is reaped)
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

    def __init__(self, settings: Settings | None = None, launcher: Launcher | None = None) -> None:
        super().__init__()
        self.settings = settings or Settings()
        self.setup_error: str | None = None  # the Setup pane's first problem: t refuses to train
        self.jobs = JobRunner(self)
        # runs start as child processes (`ProcessLauncher`; tests pass a ThreadLauncher)
        self.followed = FollowedRuns(self.jobs, launcher or ProcessLauncher())
        self.quit_pending = False
        self._models = tasks.ModelCache()
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
        attach = self.settings.attach
        if attach is not None:
            self.call_after_refresh(self.follow, "train", f"following {attach.name}…", attach)
        elif self.settings.train_now:
            self.call_after_refresh(self.action_train)
        self.set_interval(REAP_SECONDS, self.followed.launcher.reap)
        # Textual's and the engine's objects live as long as the app: left out of every later
        # collection (the backends' are frozen once the Setup pane's probe has imported them)
        gc.freeze()
        if not self.is_headless:
            signals.install(self.jobs, self.exit)
        self.focus_pane(self.active_pane)

    def on_unmount(self) -> None:
        gc.unfreeze()  # collectable again, as at exit (nanobind reports objects never freed)
        # however the app ends, it stops its jobs (following a run too); the runs go on
        self.jobs.stop_all("quit")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "train":
            return not self.running("train")
        if action == "stop":
            return any(self.running(g) for g in ("train", "sample", "sft"))
        return True

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from dashboard_commands(
            self.action_train,
            self.action_stop,
            self.action_show_pane,
            self.action_help,
            self.query_one(TrainPane),
        )

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
        self.settings = self.settings.with_data(message.path)

    @on(SetupPane.CountRequested)
    def count_corpus(self, message: SetupPane.CountRequested) -> None:
        self.jobs.start("corpus", tasks.counting(message.path), to=self.query_one(SetupPane))

    # -- sampling, questions, pictures and reports: jobs for the pane that asks ----------------
    @on(SamplePane.GenerateRequested)
    def generate(self, message: SamplePane.GenerateRequested) -> None:
        if self.running("sample"):
            self.notify("already generating; x stops it", severity="warning")
            return
        pane = self.query_one(SamplePane)
        pane.set_status("loading the checkpoint…")
        job = tasks.sampling(message.request, self.settings.request, self._models)
        self.jobs.start("sample", job, to=pane)
        self.refresh_bindings()

    @on(SFTPane.AskRequested)
    def ask(self, message: SFTPane.AskRequested) -> None:
        job = tasks.answering(
            message.run_path, message.question, message.kinds, message.seed, self.settings.request
        )
        self.jobs.start("ask", job, to=self.query_one(SFTPane))

    @on(RunsPane.PictureRequested)
    def save_picture(self, message: RunsPane.PictureRequested) -> None:
        self.jobs.start("picture", tasks.saving_picture(message.paths), to=self.query_one(RunsPane))

    @on(RunsPane.ReportRequested)
    def report(self, message: RunsPane.ReportRequested) -> None:
        pane = self.query_one(RunsPane)
        if self.jobs.stop("report", "cancelled"):
            pane.report_cancelled()
            return
        pane.report_started(message.path)
        self.jobs.start("report", tasks.reporting(message.path), to=pane)

    # -- runs: started here as processes, followed from their folders -----------------------
    @property
    def current_run_dir(self) -> Path | None:
        """The run the Train pane follows (or followed last)."""
        return self.followed.paths.get("train")

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
        line = f"starting {what} (loading data and model)…"
        self.follow("train", line, start=lambda launcher: launcher.train(request))

    @on(RunsPane.ResumeRequested)
    def resume_run(self, message: RunsPane.ResumeRequested) -> None:
        if self.running("train"):
            self.notify("a run is already training; x stops it", severity="warning")
            return
        runs_dir, path = self.settings.runs_dir, message.path
        self.follow("train", f"resuming {path.name}…", start=lambda ln: ln.resume(path, runs_dir))

    @on(RunsPane.FollowRequested)
    def follow_requested(self, message: RunsPane.FollowRequested) -> None:
        if not self.followed.follows("train", message.path):
            self.follow("train", f"following {message.path.name}…", message.path)
        self.action_show_pane("train")

    @on(SFTPane.FineTuneRequested)
    def fine_tune(self, message: SFTPane.FineTuneRequested) -> None:
        if self.running("sft"):
            self.notify("fine-tuning is already running; x stops it", severity="warning")
            return
        path, where = Path(message.run_path), self.settings.request
        writer = RunDir(path).writer()
        if writer is not None:
            self.notify(f"that run is being written: {writer.describe()}", severity="warning")
            return
        line = "starting the fine-tune (loading the base model)…"
        self.follow("sft", line, start=lambda launcher: launcher.fine_tune(path, where))

    def follow(
        self,
        group: str,
        line: str,
        path: Path | None = None,
        start: Callable[[Launcher], Launch] | None = None,
    ) -> None:
        """Follow the run in `path` in the group's pane, or the one `start(launcher)` starts
        (the launcher's train, resume or fine_tune); the run followed before goes on."""
        pane = self.run_pane(group)
        pane.follow_started(line)
        if group == "train":
            self.action_show_pane("train")
        try:
            if start is not None:
                self.followed.start(group, start, to=pane)
            elif path is not None:
                self.followed.follow(group, path, to=pane)
        except LalError as exc:
            pane.post_message(msg.EngineError(group, str(exc)))
        self.refresh_bindings()

    def run_pane(self, group: str) -> TrainPane | SFTPane:
        """The pane that shows the run a group follows ("train" or "sft")."""
        return self.query_one(TrainPane) if group == "train" else self.query_one(SFTPane)

    def action_stop(self) -> None:
        """Stop what runs in this pane, else training, else anything that runs."""
        pane, jobs = self.active_pane, self.jobs
        if pane == "sample" and jobs.stop("sample", STOPPED_HERE):
            return
        if pane == "sft" and self.stop_run("sft"):
            return
        if not (
            self.stop_run("train") or self.stop_run("sft") or jobs.stop("sample", STOPPED_HERE)
        ):
            self.notify("nothing is running")

    def stop_run(self, group: str) -> bool:
        """Ask the live run the group's pane follows to stop after its step (or say in a line
        why it cannot be: it runs on another host); False when the pane follows none."""
        if not self.running(group):
            return False
        why = self.followed.stop(group, STOPPED_HERE)
        if why is not None:
            self.notify(why, severity="warning")
        else:
            self.run_pane(group).stop_asked()
        return True

    # -- what the jobs' messages do beyond their pane -----------------------------------------
    @on(msg.TrainEvent)
    def train_event(self, message: msg.TrainEvent) -> None:
        if not self.is_running:
            return  # shutting down: the panes are gone; what a follower had queued can go too
        event = message.event
        if isinstance(event, RunStarted):
            self.runs_changed()
        elif isinstance(event, EvalDone) and self.current_run_dir is not None:
            # the live run's best val and its iteration
            self.query_one(RunsPane).show_best(
                self.current_run_dir, event.best_val, event.best_iter
            )
        elif isinstance(event, RunFailed):
            self.notify(event.message, title="training failed", severity="error", timeout=10)
        elif isinstance(event, RunFinished):
            self.notify(event.line, title=event.status.replace("_", " "), timeout=8)

    @on(msg.SFTEvent)
    def sft_event(self, message: msg.SFTEvent) -> None:
        if self.is_running and isinstance(message.event, RunFailed):
            self.notify(message.event.message, title="SFT failed", severity="error", timeout=10)

    @on(msg.EngineError)
    def engine_error(self, message: msg.EngineError) -> None:
        if not message.stale:  # else a superseded job's late word
            self.notify(
                message.message, title=f"{message.source} error", severity="error", timeout=10
            )

    @on(msg.SampleFinished)
    def sample_finished(self) -> None:
        self.refresh_bindings()

    @on(RunsPane.RunDeleted)
    def run_deleted(self) -> None:
        self.runs_changed()

    @on(msg.PictureSaved)
    def picture_saved(self, message: msg.PictureSaved) -> None:
        hint = tasks.fetch_hint(message.path)
        self.notify(f"saved {message.path}{hint}", title="picture", timeout=10)

    @on(msg.ReportDone)
    def report_done(self, message: msg.ReportDone) -> None:
        self.notify(f"report on {message.path.name} saved in its report.json", title="report")

    @on(msg.JobEnded)
    def job_ended(self, message: msg.JobEnded) -> None:
        group = message.group
        if not self.is_running or (group in RUN_JOBS and message.stale):
            return  # shutting down, or a run no longer followed
        if group == "train":
            path = self.current_run_dir
            self.runs_changed(str(path) if path and RunDir(path).run_json.is_file() else None)
        elif group == "sft":
            self.runs_changed()
        self.refresh_bindings()
        self.maybe_quit()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            self.refresh_bindings()
            if event.state == WorkerState.ERROR:  # a bug in a worker: say so, keep running
                self.notify(describe_error(event.worker.error), severity="error")
            self.maybe_quit()

    # -- quitting -----------------------------------------------------------------------------
    async def action_quit(self) -> None:
        """Quit; while a run this dashboard could stop goes on, ask: stop it first, leave it
        running, or cancel."""
        if isinstance(self.screen, ChoiceScreen):
            return
        live = self.followed.stoppable()
        if not live:
            self.exit()
            return

        def answer(choice: str | None) -> None:
            if choice == "leave":
                self.exit()
            elif choice == "stop":
                for group in live:
                    self.stop_run(group)
                self.notify("stopping the run; checkpoints and metrics are being saved…")
                self.quit_pending = True
                self.maybe_quit()

        self.push_screen(QuitScreen(), answer)

    def maybe_quit(self) -> None:
        """Quit once the runs asked to stop have saved (their followers ended)."""
        if self.quit_pending and not any(self.running(g) for g in RUN_JOBS):
            self.exit()


def main(argv: Sequence[str] | None = None) -> int:
    """`lal-tui`: a bad flag is one line and exit status 2."""
    settings = parse_settings(argv, themes=list(App().available_themes))
    app = LalApp(settings)
    app.run()
    app.jobs.stop_all("quit")
    return app.return_code or 0


if __name__ == "__main__":
    raise SystemExit(main())
