"""A run is its folder and at most one process writing it; followers read the folder.

The follower yields what the engine emitted, live or after the fact; one writer at a time
(the lock); `lal watch` and `lal stop` work on any run this machine can see."""

from __future__ import annotations

import json
import os
import socket
import threading

import pytest

from conftest import FAST, LONG, MICRO, wait_for
from lal_core.cli import main
from lal_core.runs import events as ev
from lal_core.runs.events import event_from_json, event_to_json
from lal_core.runs.folder import RunDir, list_runs
from lal_core.runs.follow import RunFollower, live_run
from lal_core.runs.lock import RunBusy
from lal_core.runs.records import ProcessInfo
from lal_core.training.request import RunRequest
from lal_core.training.train import Trainer, train


def test_the_follower_yields_what_the_trainer_emitted(short_corpus, isolated_home):
    emitted: list = []
    result = train(RunRequest(MICRO, FAST, data=short_corpus), on_event=emitted.append)
    followed = list(RunFollower(RunDir(result.run_dir)).events())
    assert followed == emitted  # the same events, in the same order, with the same values
    assert [type(e) for e in followed].count(ev.StepDone) == FAST.max_iters
    assert isinstance(followed[-1], ev.RunFinished) and followed[-1].status == "completed"


def test_a_half_written_last_line_waits_for_its_end(short_corpus, isolated_home):
    result = train(RunRequest(MICRO, FAST, data=short_corpus))
    log = RunDir(result.run_dir).metrics_path
    whole = log.read_bytes()
    lines = whole.splitlines(keepends=True)
    cut = lines[-1][: len(lines[-1]) // 2]  # the last event, as a crash would leave it
    log.write_bytes(b"".join(lines[:-1]) + cut)
    events = list(RunFollower(RunDir(result.run_dir)).events())
    assert isinstance(events[-1], ev.RunFinished) and events[-1].status == "interrupted"
    assert len(events) == len(lines)  # every whole line, then what the follower concluded
    log.write_bytes(whole)  # the line completed: it is read whole
    assert list(RunFollower(RunDir(result.run_dir)).events())[-1].status == "completed"


@pytest.fixture
def run_in_thread(short_corpus):
    """Start a long run on a thread (as another process would hold it); stopped at teardown."""
    started: list[tuple[Trainer, threading.Thread]] = []

    def start() -> tuple[threading.Thread, list]:
        emitted: list = []
        trainer = Trainer(RunRequest(MICRO, LONG, data=short_corpus), on_event=emitted.append)
        thread = threading.Thread(target=trainer.run_training, daemon=True)
        thread.start()
        started.append((trainer, thread))
        return thread, emitted

    yield start
    for trainer, thread in started:
        trainer.stop.set("teardown")
        thread.join(timeout=60)


def first_run(home) -> RunDir | None:
    runs = home / "checkpoints"
    folder = next(runs.iterdir(), None) if runs.is_dir() else None
    return RunDir(folder) if folder is not None else None


def test_a_live_run_is_followed_stopped_from_outside_and_resumed(run_in_thread, isolated_home):
    thread, emitted = run_in_thread()
    run = wait_for(lambda: first_run(isolated_home))
    follower = RunFollower(run)
    seen = []
    for event in follower.events():
        seen.append(event)
        if isinstance(event, ev.StepDone):
            assert follower.last_time is not None  # when it was written (bench/tui_latency.py)
            if event.iteration == 5:
                assert live_run(None).path == run.path  # the newest live run
                run.request_stop("test")  # what `lal stop` and the dashboard's x do
    thread.join(timeout=60)
    assert seen == emitted  # every event, in order, as the trainer emitted it
    assert seen[-1].status == "stopped" and run.read().status == "stopped"
    assert not run.stop_path.exists() and run.writer() is None
    # Where it stopped depends on how far the run got while the follower read step 5.
    more = seen[-1].iteration + 3
    resumed = Trainer.resume(run.path, max_iters=more).run_training()
    assert resumed.status == "completed" and resumed.iteration == more


def test_a_second_writer_is_refused_and_changes_nothing(short_corpus, isolated_home, capsys):
    stopped = Trainer(RunRequest(MICRO, FAST, data=short_corpus), stop=ev.StopRequest())
    stopped.stop.set("test")
    run = RunDir(stopped.run_training().run_dir)

    def files() -> dict:
        return {p.name: p.read_bytes() for p in run.path.iterdir() if p.name != ".lock"}

    before = files()
    with run.lock("train"):  # a live owner (this process, as another would be)
        code = main(["train", "--resume", str(run.path)])
        err = capsys.readouterr().err
        assert code == 1 and err.count("\n") == 1
        assert f"pid {os.getpid()} on {socket.gethostname()}" in err
        with pytest.raises(RunBusy, match="being written by training"):
            Trainer.resume(run.path, max_iters=20)
        assert main(["sft", run.run_id]) == 1  # fine-tuning is a writer too
        assert "being written by training" in capsys.readouterr().err
        assert files() == before
        assert [e.writer.pid for e in list_runs()] == [os.getpid()]
    assert Trainer.resume(run.path, max_iters=6).run_training().status == "completed"


def test_watch_prints_a_finished_runs_log_and_returns(short_corpus, isolated_home, capsys):
    result = train(RunRequest(MICRO, FAST, data=short_corpus))
    assert main(["watch", result.run_dir.name, "--no-samples"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"run {result.run_dir.name} | config micro")
    assert [line.split("|")[0].strip() for line in out[1:4]] == ["iter 0", "iter 4", "iter 8"]
    assert out[-1].startswith("finished 12 iterations at iter 12")


def test_watch_follows_a_live_run_until_it_ends(run_in_thread, isolated_home, capsys):
    thread, _ = run_in_thread()
    run = wait_for(lambda: first_run(isolated_home))
    wait_for(lambda: run.metrics_path.is_file() and b'"step"' in run.metrics_path.read_bytes())
    threading.Timer(1.0, run.request_stop, ("test",)).start()
    assert main(["watch"]) == 0  # the newest live run, until it stops
    thread.join(timeout=60)
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("stopped on request at iter")


def test_stop_asks_the_run_and_waits_until_it_has_saved(run_in_thread, isolated_home, capsys):
    thread, _ = run_in_thread()
    run = wait_for(lambda: first_run(isolated_home))
    wait_for(lambda: run.writer() and run.run_json.is_file())
    assert main(["stop"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"asked run {run.run_id}, training (pid {os.getpid()}")
    assert out[-1].startswith(f"run {run.run_id} is stopped at iter")
    thread.join(timeout=60)
    assert (run.path / "final.safetensors").is_file() and run.read().status == "stopped"


@pytest.mark.parametrize(
    "argv, code, words",
    [
        (["stop", "no-such-run"], 1, "no run 'no-such-run'"),
        (["watch", "no-such-run"], 1, "no run 'no-such-run'"),
        (["stop"], 1, "no run is being written now"),
        (["watch"], 1, "no run is being written now"),
        (["stop", "finished"], 1, "run finished is not running (completed); nothing to stop"),
        (["stop", "elsewhere"], 1, "runs on another-box: follow it from here"),
    ],
)
def test_stop_and_watch_bad_input(argv, code, words, isolated_home, capsys):
    for name, status, host in (("finished", "completed", None), ("elsewhere", "running", "x")):
        folder = isolated_home / "checkpoints" / name
        folder.mkdir(parents=True)
        info = {"model_config": MICRO.to_dict(), "status": status, "created": 1.0}
        if host:
            info["process"] = {"pid": 12345, "host": "another-box"}
        (folder / "run.json").write_text(json.dumps(info))
    if argv == ["stop"] or argv == ["watch"]:  # no live run at all: the elsewhere one is gone
        (isolated_home / "checkpoints" / "elsewhere" / "run.json").unlink()
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err


def test_a_run_whose_writer_died_reads_as_interrupted(run_in_thread, isolated_home):
    # What kill -9 leaves (tests/test_signals.py kills a real process): a log without an end
    # and run.json saying running, and no process holding the lock.
    thread, _ = run_in_thread()
    run = wait_for(lambda: first_run(isolated_home))
    wait_for(lambda: run.metrics_path.is_file() and b'"eval"' in run.metrics_path.read_bytes())
    run.request_stop("test")
    thread.join(timeout=60)
    lines = run.metrics_path.read_bytes().splitlines(keepends=True)
    ended = [i for i, line in enumerate(lines) if b'"finished"' in line]
    run.metrics_path.write_bytes(b"".join(lines[: ended[-1]]))  # as if killed before the end
    record = run.update(status="running")
    events = list(RunFollower(run).events())
    assert events[-1].status == "interrupted" and "lal train --resume" in events[-1].line
    assert [e.status for e in list_runs()] == ["interrupted"]
    assert isinstance(record.process, ProcessInfo) and record.process.started is not None


def test_every_event_reads_back_as_written_nulls_included(tmp_path):
    # A fine-tune's end (no best val) and a run stopped before its first eval log nulls.
    finished = ev.RunFinished(
        status="completed",
        iteration=65,
        best_val=None,
        best_iter=None,
        run_dir=tmp_path,
        elapsed=3.5,
        line="sft finished",
    )
    failed = ev.RunFailed(message="nan", run_dir=None, iteration=None)
    step = ev.StepDone(iteration=3, loss=2.5, lr=1e-3, tokens_per_sec=99.0, elapsed=1.0)
    for event in (finished, failed, step):
        assert event_from_json(json.loads(json.dumps(event_to_json(event))), tmp_path) == event
