"""Data-parallel training: ranks that train as one process would, agree to stop, and go down
together. The runs are real: `lal train --nproc 2` (torchrun's standalone mode, gloo on the
CPU), float32, tiny at batch 4 on a short corpus."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, call_main, run_cli, wait_for
from lal_core.backends.distributed import Ranks
from lal_core.errors import ConfigError
from lal_core.model.recipe import TrainConfig
from lal_core.runs.checkpoints import load_weights
from lal_core.runs.folder import RunDir, find_run, read_entry

# No dropout: 2 ranks draw other masks than 1 process (each rank its own).
RECIPE = ["--batch-size", "4", "--eval-interval", "5", "--dtype", "float32", "--lr", "3e-3"]
RECIPE += ["--dropout", "0"]


# -- without processes ------------------------------------------------------------------------
def test_ranks_split_a_global_batch_into_the_passes_one_process_takes():
    from lal_core.backends.base import passes

    x = np.arange(8 * 3).reshape(8, 3)
    y = x.copy()
    y[1, :] = -1  # an SFT-like batch: the shares follow the counted targets
    alone = passes(x, y, 2)
    ranks = [passes(x, y, 2, Ranks(rank=r, world=2)) for r in (0, 1)]
    together = ranks[0] + ranks[1]
    assert [len(p) for p in ranks] == [2, 2]
    assert len(together) == len(alone)
    for (xa, ya, wa), (xb, yb, wb) in zip(alone, together, strict=True):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb) and wa == pytest.approx(wb)
    assert sum(w for *_, w in together) == pytest.approx(1.0)


def test_a_batch_that_does_not_split_over_the_ranks_is_one_line():
    assert TrainConfig(batch_size=16).micro_per_rank(2) == 8
    assert TrainConfig(batch_size=16, micro_batch=4).micro_per_rank(2) == 4
    with pytest.raises(ConfigError, match="does not split over 3 ranks"):
        TrainConfig(batch_size=16).micro_per_rank(3)
    with pytest.raises(ConfigError, match="use one of 1, 2, 4, 8"):
        TrainConfig(batch_size=16, micro_batch=16).micro_per_rank(2)


def test_nproc_refuses_what_the_ranks_would_in_one_line(capsys, short_corpus):
    data = ["--data", str(short_corpus)]
    result = call_main(capsys, "train", "--nproc", "2", "--batch-size", "3", *data)
    assert_one_line_error(result, 1, "does not split over 2 ranks")
    result = call_main(capsys, "train", "--nproc", "2", "--micro-batch", "16", *data)
    assert_one_line_error(result, 1, "does not divide a rank's 8")


# -- with processes ---------------------------------------------------------------------------
def train(*args: str, runs: Path, corpus: Path) -> subprocess.CompletedProcess:
    result = run_cli("train", *RECIPE, "--data", str(corpus), "--runs-dir", str(runs), *args)
    assert result.returncode in (0, 130), result.stderr
    return result


def losses(run: Path) -> tuple[list[float], list[float]]:
    """(step losses, val losses) of a run's metrics."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["loss"] for r in rows if r["type"] == "step"]
    return steps, [r["val_loss"] for r in rows if r["type"] == "eval"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_corpus) -> tuple[Path, Path]:
    """A straight run of 12 steps on 2 ranks, and its runs folder."""
    root = tmp_path_factory.mktemp("ddp")
    train("--nproc", "2", "--max-iters", "12", "--run-id", "two", runs=root, corpus=small_corpus)
    return root, small_corpus


@pytest.mark.slow
def test_two_ranks_train_as_one_process_accumulating_two_passes(runs):
    root, corpus = runs
    train("--micro-batch", "2", "--max-iters", "12", "--run-id", "one", runs=root, corpus=corpus)
    two, one = root / "two", root / "one"
    steps2, vals2 = losses(two)
    steps1, vals1 = losses(one)
    assert len(steps2) == 12 and np.allclose(steps2, steps1, rtol=0, atol=1e-5)
    assert np.allclose(vals2, vals1, rtol=0, atol=1e-5)  # the eval, split over ranks, agrees
    record = RunDir(two).read()
    assert (record.world_size, record.micro_per_rank, record.status) == (2, 2, "completed")
    assert "world_size" not in json.loads((one / "run.json").read_text())
    # Rank 0 alone wrote: one folder, checkpoints under their plain names.
    assert sorted(p.name for p in root.iterdir()) == ["one", "two"]
    a, _ = load_weights(two / "final.safetensors")
    b, _ = load_weights(one / "final.safetensors")
    assert sorted(a) == sorted(b) and not any(k.startswith("module.") for k in a)
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-4


def _start(*args: str, root: Path, corpus: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lal_core.cli", "train", *RECIPE, "--nproc", "2"]
        + ["--data", str(corpus), "--runs-dir", str(root), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _steps_logged(run: Path) -> int:
    try:
        return sum('"type": "step"' in line for line in (run / "metrics.jsonl").open())
    except OSError:
        return 0


@pytest.mark.slow
def test_ctrl_c_stops_every_rank_at_one_step_and_resume_changes_the_ranks(runs, tmp_path):
    root, corpus = runs
    proc = _start("--max-iters", "12", "--run-id", "cut", root=tmp_path, corpus=corpus)
    run = tmp_path / "cut"
    wait_for(lambda: _steps_logged(run) >= 2, what="two steps")
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends the terminal's foreground process
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    record = RunDir(run).read()
    assert record.status == "stopped" and 2 <= record.iteration < 12
    assert out.count("stopped (") == 1, out  # saved and said once, by rank 0

    # Resumed on 2 ranks again: the straight run, bit for bit.
    twin = tmp_path / "twin"
    shutil.copytree(run, twin)
    assert run_cli("train", "--resume", str(run), "--nproc", "2").returncode == 0
    a, _ = load_weights(root / "two" / "final.safetensors")
    b, _ = load_weights(run / "final.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # Resumed in one process with micro-batch 2: the same steps within float tolerance.
    resumed = run_cli("train", "--resume", str(twin), "--micro-batch", "2")
    assert resumed.returncode == 0, resumed.stderr
    steps, _ = losses(twin)
    straight, _ = losses(root / "two")
    assert len(steps) == 12 and np.allclose(steps, straight, rtol=0, atol=1e-4)
    assert RunDir(twin).read().world_size == 1


def _rank_pid(launcher: int, rank: int) -> int | None:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == launcher and f"RANK={rank}".encode() in environ:
            return int(pid)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the rank's process in /proc")
def test_a_dead_rank_takes_the_others_down_and_leaves_the_run_resumable(runs, tmp_path):
    _, corpus = runs
    proc = _start("--max-iters", "100000", "--run-id", "dies", root=tmp_path, corpus=corpus)
    run = tmp_path / "dies"
    wait_for(lambda: _steps_logged(run) >= 6, what="the first eval and a few steps")
    pid = _rank_pid(proc.pid, 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 20  # within seconds, not a collective's timeout
    assert proc.returncode == 1
    lines = [line for line in err.splitlines() if line.startswith("lal: error:")]
    assert len(lines) == 1 and "rank 1" in lines[0] and "interrupted" in lines[0], err
    entry = read_entry(find_run(str(run)))
    assert entry.status == "interrupted" and (run / "state.safetensors").is_file()


@pytest.mark.slow
def test_mlx_ranks_from_mlx_launch_train_as_one_process(tmp_path, short_corpus):
    """MLX's own launcher (ring backend on 127.0.0.1) and the same global-batch rule; the
    micro model (tests/mlx_ranks.py), as MLX's Linux CPU wheel is slow."""
    worker = [sys.executable, str(Path(__file__).with_name("mlx_ranks.py")), str(short_corpus)]
    runs = tmp_path / "runs"
    worker += [str(runs)]
    launcher = Path(sys.executable).with_name("mlx.launch")
    ring = [str(launcher), "--hosts", "127.0.0.1", "-n", "2", "--backend", "ring", "--"]
    for command in ([*ring, *worker, "two", "2", "2"], [*worker, "one", "2", "2"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and "completed" in done.stdout, done.stderr
    steps2, vals2 = losses(runs / "two")
    steps1, vals1 = losses(runs / "one")
    assert len(steps2) == 2 and np.allclose(steps2, steps1, rtol=0, atol=1e-5)
    assert np.allclose(vals2, vals1, rtol=0, atol=1e-5)
    record = RunDir(runs / "two").read()
    assert (record.world_size, record.micro_per_rank, record.backend) == (2, 2, "mlx")
    assert sorted(p.name for p in runs.iterdir()) == ["one", "two"]
