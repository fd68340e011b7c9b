"""Signals and crashes: a stopped or killed run keeps whole checkpoints and can resume.

These start real `lal train` processes (a few seconds each, most of it importing torch). Where
a test needs a kill or a signal to land at one exact point, the process runs `lal_core.cli.main`
through `python -c` with a small patch in front that makes it so (see KILL_BEFORE_RENAME and
HOLD_THE_STOP); the others run `python -m lal_core.cli` as it is.
"""

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import call_main, wait_for
from lal_core import cli
from lal_core.model.config import ModelConfig
from lal_core.runs.checkpoints import STATE_FILE, load_state, load_weights
from lal_core.runs.folder import RunDir, read_entry
from lal_core.runs.follow import RunFollower

# `lal ARGS` with a patch run first: the patch stands for a moment in the process's life that
# timing alone would hit only by luck.
CHILD = """
import sys
{patch}
from lal_core.cli import main
sys.exit(main(sys.argv[1:]))
"""

# SIGKILL the process at the nth atomic rename onto a file named `target`: its temp file is
# written and synced, the rename has not happened (see lal_core.runs.files.atomic_write).
KILL_BEFORE_RENAME = """
import os, signal
from pathlib import Path
_seen = []
def _killing_before(rename):
    def call(src, dst, *args, **kwargs):
        if Path(dst).name == {target!r}:
            _seen.append(dst)
            if len(_seen) == {nth} and Path(src).stat().st_size > 0:
                os.kill(os.getpid(), signal.SIGKILL)
        return rename(src, dst, *args, **kwargs)
    return call
os.replace, os.rename = _killing_before(os.replace), _killing_before(os.rename)
"""

# Once a stop is requested, the first time the training loop (not a signal handler) asks, hold
# it for a minute before it may stop gracefully: a second signal in that minute can only end the
# process by exiting at once.
HOLD_THE_STOP = """
import signal, time
from lal_core.runs import events
_signal, _in_handler, _held = signal.signal, [], []
def _marking(handler):
    def marked(signum, frame):
        _in_handler.append(signum)
        try:
            return handler(signum, frame)
        finally:
            _in_handler.pop()
    return marked
def _install(sig, handler):
    return _signal(sig, _marking(handler) if callable(handler) else handler)
signal.signal = _install
_is_set = events.StopRequest.is_set
def _is_set_after_a_while(self):
    stopping = _is_set(self)
    if stopping and not _held and not _in_handler:
        _held.append(True)
        time.sleep(60)
    return stopping
events.StopRequest.is_set = _is_set_after_a_while
"""


@dataclass
class Child:
    proc: subprocess.Popen
    out: Path
    err: Path

    def output(self) -> tuple[str, str]:
        return self.out.read_text(), self.err.read_text()

    def finish(self, timeout: float) -> tuple[str, str]:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"lal train did not exit within {timeout} s") from None
        return self.output()


def start_training(home: Path, corpus: Path, *extra: str, patch: str | None = None) -> Child:
    """`lal train` on the tiny config in a process of its own, its output going to files."""
    args = ["train", "--config", "tiny", "--batch-size", "2", "--data", str(corpus)]
    defaults = {"--max-iters": "400", "--eval-interval": "2"}
    args += [x for flag, value in defaults.items() if flag not in extra for x in (flag, value)]
    args += extra
    entry = ["-m", "lal_core.cli"] if patch is None else ["-c", CHILD.format(patch=patch)]
    out, err = home.parent / "child.out", home.parent / "child.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, *entry, *args],
            stdout=stdout,
            stderr=stderr,
            text=True,
            env={**os.environ, "LAL_HOME": str(home)},
        )
    return Child(proc, out, err)


def wait_while_running(child: Child, found, what: str, timeout: float = 240):
    """Poll until `found()` gives something true while the child runs; return that. On a
    timeout the child is killed."""

    def seen():
        assert child.proc.poll() is None, (child.proc.returncode, *child.output())
        return found()

    try:
        return wait_for(seen, timeout, what)
    except AssertionError:
        if child.proc.poll() is None:  # timed out: leave no process behind
            child.proc.kill()
            child.proc.wait()
        raise


def wait_for_steps(home: Path, n: int, child: Child) -> Path:
    """The run folder, once its metrics hold at least n steps (they are flushed at each eval)."""

    def run_with_steps():
        for metrics in (home / "checkpoints").glob("*/metrics.jsonl"):
            if len(RunDir(metrics.parent).steps()) >= n:
                return metrics.parent
        return None

    return wait_while_running(child, run_with_steps, f"{n} steps")


def run_config(run: Path) -> ModelConfig:
    return RunDir(run).read().model_config


def assert_checkpoints_load(run: Path) -> list[str]:
    """Every checkpoint in the run loads whole; their names."""
    cfg = run_config(run)
    names = sorted(p.name for p in run.glob("*.safetensors"))
    for name in names:
        if name == STATE_FILE:
            load_state(run / name, cfg)
        else:
            load_weights(run / name, cfg)
    return names


def status(run: Path) -> str:
    return read_entry(RunDir(run)).status


def assert_shown_as(run: Path, expected: str, capsys) -> None:
    assert status(run) == expected
    result = call_main(capsys, "runs")
    assert result.returncode == 0, result.stderr
    (line,) = [x for x in result.stdout.splitlines() if x.startswith(run.name)]
    assert line.split()[-1] == expected


def resume_to_the_end(run: Path, capsys, *extra: str) -> None:
    """`lal train --resume RUN` in this process: it finishes the run."""
    result = call_main(capsys, "train", "--resume", run.name, *extra)
    assert result.returncode == 0, result.stderr
    assert RunDir(run).read().status == "completed"
    assert "final.safetensors" in assert_checkpoints_load(run)
    assert list(run.glob(".*.tmp")) == []  # a resume clears what a killed write left
    assert_shown_as(run, "completed", capsys)


@pytest.mark.slow
def test_ctrl_c_stops_a_real_process_cleanly_and_it_resumes(isolated_home, short_corpus, capsys):
    sig = signal.SIGINT
    child = start_training(isolated_home, short_corpus)
    run = wait_for_steps(isolated_home, 2, child)  # the eval at 2 has begun
    child.proc.send_signal(sig)
    out, err = child.finish(timeout=120)
    assert child.proc.returncode == 130, err
    assert "Traceback" not in err
    assert f"lal: {sig.name}: stopping after this step" in err
    assert f"resume with: lal train --resume {run.name}" in out
    assert RunDir(run).read().status == "stopped"
    assert {"best.safetensors", "final.safetensors", STATE_FILE} <= set(
        assert_checkpoints_load(run)
    )
    _, _, state = load_state(run / STATE_FILE, run_config(run))
    assert state["iteration"] >= 2
    assert_shown_as(run, "stopped", capsys)
    resume_to_the_end(run, capsys, "--max-iters", str(state["iteration"] + 2))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_kill_and_a_closed_terminal_stop_the_run_as_ctrl_c_does(
    sig, isolated_home, short_corpus, capsys
):
    # `kill` and a dropped SSH link, delivered to this process while `lal train` runs in it
    # (the handler runs on the main thread, between the training loop's bytecodes); the
    # Ctrl-C test above covers the whole way through a real process.
    def send_once_training():
        runs = isolated_home / "checkpoints"
        wait_for(lambda: any(runs.glob(f"*/{STATE_FILE}")), 120, "the run's state file")
        os.kill(os.getpid(), sig)  # inside the run

    before = signal.getsignal(sig)
    threading.Thread(target=send_once_training, daemon=True).start()
    argv = ["train", "--batch-size", "2", "--eval-interval", "2", "--data", str(short_corpus)]
    code = cli.main([*argv, "--max-iters", "400"])
    out, err = capsys.readouterr()
    assert code == 130 and f"lal: {sig.name}: stopping after this step" in err, err
    (run,) = (isolated_home / "checkpoints").iterdir()
    assert f"resume with: lal train --resume {run.name}" in out
    assert RunDir(run).read().status == "stopped" and RunDir(run).read().iteration < 400
    assert "final.safetensors" in assert_checkpoints_load(run)
    assert signal.getsignal(sig) is before  # the handler is gone with the run


@pytest.mark.parametrize(
    "target, nth",
    [
        (STATE_FILE, 3),  # the last eval's state (iter 4): the one of iter 2 stays
    ],
)
@pytest.mark.slow
def test_sigkill_in_the_middle_of_a_save(target, nth, isolated_home, short_corpus, capsys):
    patch = KILL_BEFORE_RENAME.format(target=target, nth=nth)
    child = start_training(
        isolated_home, short_corpus, "--max-iters", "4", "--eval-interval", "2", patch=patch
    )
    out, err = child.finish(timeout=240)
    assert child.proc.returncode == -signal.SIGKILL, (child.proc.returncode, out, err)
    (run,) = (isolated_home / "checkpoints").iterdir()

    # The kill came between writing the temp file and renaming it: the temp file is there, and
    # the file it was to replace is the previous whole one (or absent).
    assert len(list(run.glob(f".{target}.*.tmp"))) == 1
    assert RunDir(run).read().status == "running"
    names = assert_checkpoints_load(run)
    assert STATE_FILE in names and "best.safetensors" in names
    assert "final.safetensors" not in names
    if target == STATE_FILE:
        assert load_state(run / STATE_FILE, run_config(run))[2]["iteration"] < 4
    assert_shown_as(run, "interrupted", capsys)
    followed = list(RunFollower(RunDir(run)).events())  # what a follower (a dashboard) sees
    assert followed[-1].status == "interrupted" and RunDir(run).writer() is None

    resume_to_the_end(run, capsys)  # at once: the kill released the lock
    steps = [r.iteration for r in RunDir(run).steps()]
    assert steps == list(range(4))  # each step once: the killed session's extras were dropped


@pytest.mark.slow
def test_second_ctrl_c_exits_at_once(isolated_home, short_corpus, capsys):
    child = start_training(isolated_home, short_corpus, patch=HOLD_THE_STOP)
    run = wait_for_steps(isolated_home, 2, child)  # the eval at 2 has begun
    child.proc.send_signal(signal.SIGINT)

    def first_stop() -> bool:
        return "stopping after this step" in child.err.read_text()

    wait_while_running(child, first_stop, "the first stop")
    child.proc.send_signal(signal.SIGINT)
    # The graceful stop is held for a minute (HOLD_THE_STOP): only the second Ctrl-C ends it.
    out, err = child.finish(timeout=30)
    assert child.proc.returncode == 130 and "Traceback" not in err
    assert "lal: stopping now" in err
    assert "resume with" not in out  # it did not stop the graceful way
    assert RunDir(run).read().status == "running"
    assert_shown_as(run, "interrupted", capsys)
    # What the evals saved before the signals (the one at 0 at least) is whole.
    assert {"best.safetensors", STATE_FILE} <= set(assert_checkpoints_load(run))
