"""`lal eval`: a checkpoint's loss and perplexity, on its run's val split or on any text."""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import replace

import pytest

from conftest import FAST, MICRO, assert_one_line_error, call_main
from lal_core.data.tokenizer import encode
from lal_core.runs.folder import RunDir
from lal_core.training.request import RunRequest
from lal_core.training.train import train

LINE = re.compile(
    r"on (?P<text>.+): loss (?P<loss>[\d.]+) \((?P<bpb>[\d.]+) bits per byte\), "
    r"perplexity (?P<ppl>[\d.]+) over "
    r"(?P<tokens>[\d,]+) tokens \((?P<windows>[\d,]+) windows of (?P<block>\d+)\)"
)


def scored(capsys, *args) -> dict:
    result = call_main(capsys, "eval", *args)
    assert result.returncode == 0, result.stderr
    match = LINE.search(result.stdout)
    assert match, result.stdout
    return match.groupdict()


@pytest.fixture(scope="module")
def trained(small_corpus, tmp_path_factory) -> RunDir:
    """One training for the module (early stopping off: best and final are the evals at
    their iterations); tests get a copy."""
    root = tmp_path_factory.mktemp("eval-runs")
    cfg = replace(FAST, patience=100)
    return RunDir(train(RunRequest(MICRO, cfg, data=small_corpus, runs_dir=root)).run_dir)


@pytest.fixture
def run(trained, isolated_home) -> RunDir:
    copy = isolated_home / "checkpoints" / trained.run_id
    shutil.copytree(trained.path, copy)
    return RunDir(copy)


def test_eval_gives_the_val_loss_the_run_recorded(run, capsys):
    evals = run.evals()
    info = run.read()
    best = scored(capsys, run.run_id)  # --checkpoint best by default
    assert best["text"] == "the val split of small.txt"
    assert float(best["loss"]) == pytest.approx(info.best_val, abs=1e-3)
    assert float(best["bpb"]) == pytest.approx(info.best_bpb, abs=1e-3)  # as run.json says
    assert float(best["ppl"]) == pytest.approx(math.exp(float(best["loss"])), rel=1e-3)
    final = scored(capsys, run.run_id, "--checkpoint", "final")
    assert evals[-1].iteration == FAST.max_iters  # final holds the last eval's weights
    assert float(final["loss"]) == pytest.approx(evals[-1].val_loss, abs=1e-3)


@pytest.mark.slow
def test_eval_on_another_text_counts_its_windows(run, tmp_path, capsys, shakespeare):
    other = tmp_path / "other.txt"
    other.write_text(shakespeare.read_text()[-3_000:])  # text the run never read
    n = len(encode(other.read_text()))
    got = scored(capsys, run.run_id, "--data", str(other))
    windows = (n - 1) // MICRO.block_size
    assert got["text"] == "other.txt" and int(got["windows"].replace(",", "")) == windows
    assert int(got["tokens"].replace(",", "")) == windows * MICRO.block_size
    assert float(got["loss"]) > 0


def test_eval_bad_input_is_one_line(run, tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("To be, or not to be.")
    result = call_main(capsys, "eval", run.run_id, "--data", str(short))
    assert_one_line_error(result, 1, "fewer than one window")

    loose = tmp_path / "loose.safetensors"  # a checkpoint outside any run folder
    shutil.copy(run.checkpoint("best"), loose)
    assert_one_line_error(call_main(capsys, "eval", str(loose)), 1, "--data")
    assert scored(capsys, str(loose), "--data", run.read().data.path)["text"] == "small.txt"

    corpus = tmp_path / "changed.txt"  # the run's text edited since it trained
    corpus.write_text(short.read_text() * 2000)
    run.update(data=replace(run.read().data, path=str(corpus)))
    assert_one_line_error(call_main(capsys, "eval", run.run_id), 1, "changed since run")
