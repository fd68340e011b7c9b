"""Signals and crashes: a stopped or killed run keeps whole checkpoints and can resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lal_core.checkpoint import STATE_FILE, load_state, load_weights
from lal_core.config import ModelConfig
from lal_core.runs import list_runs


def start_training(home: Path, corpus: Path, *extra: str) -> subprocess.Popen:
    args = [
        "train",
        "--config",
        "tiny",
        "--batch-size",
        "2",
        "--max-iters",
        "400",
        "--eval-interval",
        "5",
        "--data",
        str(corpus),
        *extra,
    ]
    return subprocess.Popen(
        [sys.executable, "-m", "lal_core.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "LAL_HOME": str(home)},
    )


def wait_for_steps(home: Path, n: int, proc: subprocess.Popen, timeout: float = 240) -> Path:
    """The run folder, once its metrics hold at least n steps."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        for metrics in (home / "checkpoints").glob("*/metrics.jsonl"):
            steps = [x for x in metrics.read_text().splitlines() if '"step"' in x]
            if len(steps) >= n:
                return metrics.parent
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("training did not get going in time")


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP"]
)
def test_signal_stops_cleanly_and_resumes(sig, isolated_home, small_corpus):
    proc = start_training(isolated_home, small_corpus)
    run = wait_for_steps(isolated_home, 8, proc)  # metrics are flushed at every eval (5 steps)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert f"resume with: lal train --resume {run.name}" in out
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "stopped"
    cfg = ModelConfig.from_dict(info["model_config"])
    _, _, state = load_state(run / STATE_FILE, cfg)
    assert state["iteration"] >= 8
    if sig != signal.SIGINT:
        return
    # Resuming finishes the run.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lal_core.cli",
            "train",
            "--resume",
            run.name,
            "--max-iters",
            str(state["iteration"] + 3),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "LAL_HOME": str(isolated_home)},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "run.json").read_text())["status"] == "completed"


def test_sigkill_at_any_moment_leaves_loadable_checkpoints(isolated_home, small_corpus):
    # eval_interval 1: best, state and run.json are rewritten every step, so kills land mid-save.
    for delay in (0.05, 0.4, 0.9):
        proc = start_training(isolated_home, small_corpus, "--eval-interval", "1")
        wait_for_steps(isolated_home, 0, proc)
        time.sleep(delay)
        proc.kill()
        proc.wait()
    for run in (isolated_home / "checkpoints").iterdir():
        info = json.loads((run / "run.json").read_text())
        cfg = ModelConfig.from_dict(info["model_config"])
        for ckpt in run.glob("*.safetensors"):
            if ckpt.name == STATE_FILE:
                load_state(ckpt, cfg)
            else:
                load_weights(ckpt, cfg)
    statuses = {r.status for r in list_runs(isolated_home / "checkpoints")}
    assert statuses == {"interrupted"}


def test_second_ctrl_c_exits_at_once(isolated_home, small_corpus):
    proc = start_training(isolated_home, small_corpus)
    wait_for_steps(isolated_home, 0, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    run = next((isolated_home / "checkpoints").iterdir())
    cfg = ModelConfig.from_dict(json.loads((run / "run.json").read_text())["model_config"])
    for ckpt in run.glob("best.safetensors"):
        load_weights(ckpt, cfg)
