"""Evals during training: their own batch, a cap on the val tokens they score, and a stop
request that does not wait for them."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import MICRO, one_short_sample
from lal_core.backends import make_backend
from lal_core.data.corpus import load_corpus, val_windows
from lal_core.model.recipe import TrainConfig, eval_batch_size
from lal_core.quality.scoring import score
from lal_core.runs import events as ev
from lal_core.runs.checkpoints import read_state_header
from lal_core.runs.folder import RunDir
from lal_core.training.request import RunRequest
from lal_core.training.train import Trainer


def test_val_windows_spread_a_capped_count_evenly():
    split = np.zeros(10_001, dtype=np.uint16)  # 312 whole windows of 32 (+ 1 target)
    every = val_windows(split, 32)
    assert len(every) == 312 and np.array_equal(every, np.arange(312) * 32)
    capped = val_windows(split, 32, max_tokens=320)
    assert len(capped) == 10 and capped[0] == 0 and capped[-1] == 311 * 32
    assert np.all(np.diff(capped) >= 32)  # whole windows, none overlapping
    assert np.array_equal(capped, val_windows(split, 32, max_tokens=320))  # the same each time
    assert len(val_windows(split, 32, max_tokens=10)) == 1  # under one window: one window
    assert len(val_windows(split, 32, max_tokens=10**9)) == 312  # more than there is: all


@pytest.mark.parametrize("backend", ["torch", pytest.param("mlx", marks=pytest.mark.slow)])
def test_a_stop_during_an_eval_abandons_it_and_a_resume_runs_it(backend, short_corpus):
    cfg = one_short_sample(TrainConfig(max_iters=8, eval_interval=5, batch_size=2, eval_tokens=0))
    model = make_backend(backend, MICRO, seed=cfg.seed)
    stop, batches = ev.StopRequest(), []
    plain_eval = model.eval_loss

    def eval_loss(x, y):
        batches.append(len(x))
        if len(batches) == 3:  # the first pass of the eval at iteration 5
            stop.set("test")
        return plain_eval(x, y)

    model.eval_loss = eval_loss
    result = Trainer(
        RunRequest(MICRO, cfg, backend=model, data=short_corpus), stop=stop
    ).run_training()
    run = RunDir(result.run_dir)
    # The eval at 0 took one pass of train windows and one of val: the eval's own batch of
    # 64 windows (2,048 tokens), not the training batch of 2.
    corpus = load_corpus(short_corpus)
    windows = len(val_windows(corpus.val, MICRO.block_size))
    assert eval_batch_size(MICRO, cfg.micro) == 64 >= windows
    assert batches[:2] == [windows, windows]
    # The stop came during the eval at 5: its val pass never ran, and the run stopped there.
    assert len(batches) == 3 and result.status == "stopped" and result.iteration == 5
    assert [r.iteration for r in run.evals()] == [0] and run.read().status == "stopped"
    state = read_state_header(run.path / "state.safetensors")
    assert (state["iteration"], state["evaluated"]) == (5, False)

    seen = []
    resumed = Trainer.resume(run.path, on_event=seen.append).run_training()
    evals = [e.iteration for e in seen if isinstance(e, ev.EvalDone)]
    assert resumed.status == "completed" and evals == [5, 8]
    assert [r.iteration for r in run.steps()] == list(range(8))


def test_eval_tokens_caps_what_an_eval_scores(small_corpus):
    cfg = one_short_sample(TrainConfig(max_iters=4, eval_interval=2, batch_size=2, eval_tokens=320))
    seen = []
    result = Trainer(RunRequest(MICRO, cfg, data=small_corpus), on_event=seen.append).run_training()
    record = RunDir(result.run_dir).read()
    assert record.data.eval_tokens == 320 < record.data.val_tokens  # recorded in run.json
    started = next(e for e in seen if isinstance(e, ev.RunStarted))
    assert "320 per eval" in started.header
    # `lal eval` of the run scores what its evals scored: the best checkpoint's recorded loss.
    best = score(result.run_dir / "best.safetensors")
    assert best.windows == 10 and best.loss == pytest.approx(record.best_val, abs=1e-3)
