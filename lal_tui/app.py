"""The lal dashboard: configure, train, watch, sample and fine-tune from one terminal.

    uv run lal-tui [--config tiny] [--train] [--attach [RUN]] [--data PATH] [--theme NAME]

A run is a process of its own that writes its folder (`lal_tui.launcher`): the Train and SFT
panes only follow a run folder (`lal_tui.followed`, `engine_jobs.following`), whether it was
started here, by `lal train` in another terminal or before the dashboard opened, and `x` asks
it to stop through its stop file. Quitting, a closed terminal or `kill` end the dashboard, not
the run. The panes, the settings and the rest are the `Dashboard`'s (`lal_tui.dashboard`).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from textual import on
from textual.app import App, SystemCommand
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from lal_core.errors import LalError
from lal_core.runs.events import EvalDone, RunFailed, RunFinished, RunStarted
from lal_core.runs.folder import RunDir
from lal_tui import signals
from lal_tui.args import parse_settings
from lal_tui.commands import dashboard_commands
from lal_tui.dashboard import Dashboard
from lal_tui.followed import RUN_JOBS, FollowedRuns, Launcher
from lal_tui.jobs import describe_error
from lal_tui.launcher import Launch, ProcessLauncher
from lal_tui.messages import EngineError, JobEnded, SFTEvent, TrainEvent
from lal_tui.panes.runs import RunsPane
from lal_tui.panes.sft import SFTPane
from lal_tui.panes.train import TrainPane
from lal_tui.screens.confirm import ChoiceScreen, QuitScreen
from lal_tui.settings import Settings

REAP_SECONDS = 2.0  # how often the runs started here are polled (an exited one is reaped)
STOPPED_HERE = "stopped from the dashboard"


class LalApp(Dashboard):
    """Configure, train, watch, sample and fine-tune a small GPT."""

    def __init__(self, settings: Settings | None = None, launcher: Launcher | None = None) -> None:
        super().__init__(settings)
        # runs start as child processes (`lal_tui.launcher`; tests pass a ThreadLauncher)
        self.followed = FollowedRuns(self.jobs, launcher or ProcessLauncher())
        self.quit_pending = False

    def on_mount(self) -> None:  # (Textual calls the Dashboard's on_mount as well)
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

    def on_unmount(self) -> None:
        gc.unfreeze()  # collectable again, as at exit (nanobind reports objects never freed)

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

    @property
    def current_run_dir(self) -> Path | None:
        """The run the Train pane follows (or followed last)."""
        return self.followed.paths.get("train")

    # -- runs: started here as processes, followed from their folders -----------------------
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

    def follow(
        self,
        group: str,
        line: str,
        path: Path | None = None,
        start: Callable[[Launcher], Launch] | None = None,
    ) -> None:
        """Follow the run in `path` in the group's pane, or the one `start(launcher)` starts
        (the launcher's train, resume or fine_tune); the run followed before goes on."""
        if group == "train":
            pane = self.query_one(TrainPane)
            pane.reset()
            pane.note(line, state="starting")
            self.action_show_pane("train")
        else:
            self.query_one(SFTPane).set_status(line)
        try:
            if start is not None:
                self.followed.start(group, start)
            elif path is not None:
                self.followed.follow(group, path)
        except LalError as exc:
            self.engine_error(EngineError(group, str(exc)))
        self.refresh_bindings()

    @on(TrainEvent)
    def train_event(self, message: TrainEvent) -> None:
        if not self.is_running:
            return  # shutting down: the panes are gone; what a follower had queued can go too
        event = message.event
        self.query_one(TrainPane).record(event)
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

    @on(JobEnded)
    def job_ended(self, message: JobEnded) -> None:
        group, result = message.group, message.result
        if not self.is_running or (group in RUN_JOBS and not self.jobs.is_current(message.worker)):
            return  # shutting down, or a run no longer followed
        if group == "train":
            self.query_one(TrainPane).follow_ended(result is not None)
            path = self.current_run_dir
            self.runs_changed(str(path) if path and RunDir(path).run_json.is_file() else None)
        elif group == "sft":
            path = self.followed.paths.get("sft")
            done = isinstance(result, RunFinished) and result.status in ("completed", "stopped")
            self.query_one(SFTPane).ended(RunDir(path).checkpoint("sft") if done and path else None)
            self.runs_changed()
        self.refresh_bindings()
        self.maybe_quit()

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
        elif group == "train":
            self.query_one(TrainPane).note("stopping after this step…", state="stopping")
        else:
            self.query_one(SFTPane).set_status("stopping after this batch…")
        return True

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

    @on(SFTEvent)
    def sft_event(self, message: SFTEvent) -> None:
        if not self.is_running:
            return
        self.query_one(SFTPane).record(message.event)
        if isinstance(message.event, RunFailed):
            self.notify(message.event.message, title="SFT failed", severity="error", timeout=10)

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
