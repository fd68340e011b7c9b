import json
import threading

import pytest

from lal_core import events as ev
from lal_core.checkpoint import load_weights
from lal_core.config import TrainConfig
from lal_core.data import load_corpus
from lal_core.sampling import load_for_sampling
from lal_core.trainer import Trainer, evaluate, train


def test_short_run_lowers_the_loss(micro_cfg, small_corpus, isolated_home):
    seen = []
    cfg = TrainConfig(max_iters=40, eval_interval=20, batch_size=8, lr=3e-3, warmup_iters=5)
    result = train(micro_cfg, cfg, data=small_corpus, on_event=seen.append)
    evals = [e for e in seen if isinstance(e, ev.EvalDone)]
    assert [e.iteration for e in evals] == [0, 20, 40]
    assert evals[0].val_loss > 10.5
    assert evals[-1].val_loss < evals[0].val_loss - 2.0
    assert result.status == "completed" and result.iteration == 40

    # The run folder holds everything the issue lists, and nothing pickled.
    files = sorted(p.name for p in result.run_dir.iterdir())
    assert files == ["best.safetensors", "final.safetensors", "metrics.jsonl", "run.json"]
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["status"] == "completed" and info["iteration"] == 40
    assert info["backend"] == "torch" and info["device"] == "cpu"
    assert info["data"]["sha256"] and info["model_config"]["n_embd"] == 32
    assert info["best_val"] == pytest.approx(min(e.val_loss for e in evals))
    metrics = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()]
    assert sum(m["type"] == "step" for m in metrics) == 40
    assert sum(m["type"] == "eval" for m in metrics) == 3

    # Event order: started first, finished last, a step event per step.
    assert isinstance(seen[0], ev.RunStarted) and isinstance(seen[-1], ev.RunFinished)
    assert sum(isinstance(e, ev.StepDone) for e in seen) == 40
    assert "*" in evals[-1].line and evals[-1].line.startswith("iter 40 ")


def test_early_stopping_and_best_checkpoint(micro_cfg, tmp_path, shakespeare):
    # Train text unlike the val text: a high learning rate soon makes val loss climb.
    text = shakespeare.read_text()
    corpus_path = tmp_path / "shifted.txt"
    corpus_path.write_text("the cat sat on the mat.\n" * 2500 + text[:40_000])
    corpus = load_corpus(corpus_path)
    seen = []
    cfg = TrainConfig(
        max_iters=400, eval_interval=4, batch_size=4, lr=1e-2, warmup_iters=2, patience=3
    )
    result = train(micro_cfg, cfg, data=corpus, on_event=seen.append)
    evals = [e for e in seen if isinstance(e, ev.EvalDone)]
    stops = [e for e in seen if isinstance(e, ev.EarlyStopped)]
    assert result.status == "early_stopped" and len(stops) == 1
    best = min(evals, key=lambda e: e.val_loss)
    assert result.best_iter == best.iteration == stops[0].best_iter
    # It stopped exactly `patience` evals after the best one.
    assert evals[-1].iteration == best.iteration + cfg.patience * cfg.eval_interval
    assert sum(e.is_best for e in evals) >= 1 and evals[-1].is_best is False

    # The best checkpoint holds the best eval's weights: reloading gives the same val loss.
    reloaded = load_for_sampling(result.run_dir / "best.safetensors")
    _, val = evaluate(reloaded, corpus, micro_cfg.block_size, cfg.batch_size)
    assert val == pytest.approx(best.val_loss, abs=1e-5)
    _, final_cfg = load_weights(result.run_dir / "final.safetensors")
    assert final_cfg == micro_cfg


def test_stop_request_from_another_thread(micro_cfg, small_corpus):
    stop = ev.StopRequest()
    steps = []

    def on_event(event):
        if isinstance(event, ev.StepDone):
            steps.append(event.iteration)
            if event.iteration == 4:
                threading.Thread(target=stop.set).start()

    cfg = TrainConfig(max_iters=500, eval_interval=100, batch_size=2)
    trainer = Trainer(micro_cfg, cfg, data=small_corpus, on_event=on_event, stop=stop)
    result = trainer.run_training()
    assert result.status == "stopped"
    assert 5 <= len(steps) <= 7  # the stop lands at the next step boundary
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["status"] == "stopped"
    assert (result.run_dir / "final.safetensors").is_file()
    assert (result.run_dir / "best.safetensors").is_file()


def test_non_finite_loss_fails_and_keeps_best(micro_cfg, small_corpus, monkeypatch):
    from lal_core.backends.torch_backend import TorchBackend

    real_step = TorchBackend.train_step

    def poisoned(self, x, y, lr):
        loss = real_step(self, x, y, lr)
        return float("nan") if lr > 0 and self._steps_taken() >= 3 else loss

    calls = {"n": 0}

    def steps_taken(self):
        calls["n"] += 1
        return calls["n"]

    monkeypatch.setattr(TorchBackend, "train_step", poisoned)
    monkeypatch.setattr(TorchBackend, "_steps_taken", steps_taken, raising=False)
    seen = []
    cfg = TrainConfig(max_iters=50, eval_interval=10, batch_size=2)
    result = train(micro_cfg, cfg, data=small_corpus, on_event=seen.append)
    assert result.status == "failed"
    failed = [e for e in seen if isinstance(e, ev.RunFailed)]
    assert len(failed) == 1 and "nan" in failed[0].message
    assert (result.run_dir / "best.safetensors").is_file()
    assert json.loads((result.run_dir / "run.json").read_text())["status"] == "failed"
