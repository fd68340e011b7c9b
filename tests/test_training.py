import threading
from dataclasses import replace

import pytest

from conftest import one_short_sample
from lal_core.backends.torch.device import default_device
from lal_core.data.corpus import load_corpus
from lal_core.generation.sampling import load_for_sampling
from lal_core.model.recipe import TrainConfig
from lal_core.runs import events as ev
from lal_core.runs.checkpoints import load_weights
from lal_core.runs.folder import RunDir
from lal_core.training.evals import evaluate
from lal_core.training.request import RunRequest
from lal_core.training.train import Trainer, train

# The loop is written once; these tests run it on both backends. MLX's Linux CPU wheel runs
# this model about 30x slower than torch here, and every eval covers the whole val split, so its
# runs are shorter, with a higher learning rate, on smaller corpora. The assertions are the same.
SHORT_RUN = {  # backend: (recipe, characters of TinyShakespeare)
    "torch": (
        TrainConfig(max_iters=40, eval_interval=20, batch_size=8, lr=3e-3, warmup_iters=5),
        0,
    ),
    "mlx": (  # one short sample an eval: MLX's CPU wheel samples slowly
        replace(
            TrainConfig(max_iters=12, eval_interval=6, batch_size=4, lr=2e-2, warmup_iters=2),
            eval_samples=1,
            eval_sample_tokens=8,
        ),
        10_000,
    ),
}
# (recipe, repeats of the cat line, characters of TinyShakespeare)
EARLY_STOP = (
    TrainConfig(
        max_iters=400,
        eval_interval=4,
        batch_size=4,
        lr=1e-2,
        warmup_iters=2,
        patience=3,
        eval_samples=0,  # up to 100 evals: their samples are tested elsewhere
    ),
    800,
    12_000,
)


@pytest.fixture(params=["torch", pytest.param("mlx", marks=pytest.mark.slow)])
def backend(request):
    return request.param


def test_short_run_lowers_the_loss(backend, micro_cfg, small_corpus, shakespeare, tmp_path):
    seen = []
    cfg, chars = SHORT_RUN[backend]
    corpus = small_corpus
    if chars:
        corpus = tmp_path / "short.txt"
        corpus.write_text(shakespeare.read_text()[:chars])
    result = train(RunRequest(micro_cfg, cfg, backend=backend, data=corpus), on_event=seen.append)
    evals = [e for e in seen if isinstance(e, ev.EvalDone)]
    assert [e.iteration for e in evals] == [0, cfg.eval_interval, cfg.max_iters]
    assert evals[0].val_loss > 10.5
    assert evals[-1].val_loss < evals[0].val_loss - 2.0
    assert result.status == "completed" and result.iteration == cfg.max_iters
    # After every eval, on either backend, samples of what it writes then, with their figures.
    drawn = [e for e in seen if isinstance(e, ev.SamplesDone)]
    assert [d.iteration for d in drawn] == [e.iteration for e in evals]
    assert all(d.status == "done" and len(d.texts) == cfg.eval_samples for d in drawn)
    assert all(d.figures.samples == cfg.eval_samples for d in drawn)

    # The run folder holds everything the issue lists, and nothing pickled.
    files = sorted(p.name for p in result.run_dir.iterdir())
    assert files == [
        ".lock",  # the writer's lock (empty once the run is over)
        "best.safetensors",
        "final.safetensors",
        "metrics.jsonl",
        "run.json",
        "state.safetensors",
    ]
    info = RunDir(result.run_dir).read()
    assert info.status == "completed" and info.iteration == cfg.max_iters
    device = default_device() if backend == "torch" else "cpu"  # cuda on a GPU machine
    assert info.backend == backend and info.device == device
    # A compiling run (the default on CUDA) says so first; then the run starts.
    events = [e for e in seen if not isinstance(e, ev.Preparing)]
    assert f"| Device: {backend}/{device} |" in events[0].header
    assert info.data.sha256 and info.model_config.n_embd == 32
    assert info.best_val == pytest.approx(min(e.val_loss for e in evals))
    assert len(RunDir(result.run_dir).steps()) == cfg.max_iters
    assert len(RunDir(result.run_dir).evals()) == 3

    # Event order: started first, finished last, a step event per step.
    assert isinstance(events[0], ev.RunStarted) and isinstance(events[-1], ev.RunFinished)
    assert sum(isinstance(e, ev.StepDone) for e in seen) == cfg.max_iters
    assert "*" in evals[-1].line and evals[-1].line.startswith(f"iter {cfg.max_iters} ")


@pytest.mark.slow
def test_early_stopping_and_best_checkpoint(micro_cfg, tmp_path, shakespeare):
    # The eval cadence and early stopping are the loop's (lal_core/training/train.py), the same for
    # every backend; MLX runs the loop in the tests above and in test_mlx.py.
    backend = "torch"
    # Train text unlike the val text: a high learning rate soon makes val loss climb.
    cfg, cats, chars = EARLY_STOP
    text = shakespeare.read_text()
    corpus_path = tmp_path / "shifted.txt"
    corpus_path.write_text("the cat sat on the mat.\n" * cats + text[:chars])
    corpus = load_corpus(corpus_path)
    seen = []
    result = train(RunRequest(micro_cfg, cfg, backend=backend, data=corpus), on_event=seen.append)
    evals = [e for e in seen if isinstance(e, ev.EvalDone)]
    stops = [e for e in seen if isinstance(e, ev.EarlyStopped)]
    assert result.status == "early_stopped" and len(stops) == 1
    best = min(evals, key=lambda e: e.val_loss)
    assert result.best_iter == best.iteration == stops[0].best_iter
    # It stopped exactly `patience` evals after the best one.
    assert evals[-1].iteration == best.iteration + cfg.patience * cfg.evals_every
    assert sum(e.is_best for e in evals) >= 1 and evals[-1].is_best is False

    # The best checkpoint holds the best eval's weights: reloading gives the same val loss.
    reloaded = load_for_sampling(result.run_dir / "best.safetensors", backend)
    _, val = evaluate(reloaded, corpus, cfg)
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

    cfg = one_short_sample(TrainConfig(max_iters=500, eval_interval=100, batch_size=2))
    trainer = Trainer(RunRequest(micro_cfg, cfg, data=small_corpus), on_event=on_event, stop=stop)
    result = trainer.run_training()
    assert result.status == "stopped"
    assert 5 <= len(steps) <= 7  # the stop lands at the next step boundary
    assert RunDir(result.run_dir).read().status == "stopped"
    assert (result.run_dir / "final.safetensors").is_file()
    assert (result.run_dir / "best.safetensors").is_file()


def test_a_compiling_run_says_so_before_the_wait(micro_cfg, small_corpus, monkeypatch):
    from lal_core.backends.torch.backend import TorchBackend

    seen, at_compile = [], []
    # Compiling takes a minute on a CPU: record what was said when it would start instead.
    monkeypatch.setattr(TorchBackend, "_compile", lambda self, b: at_compile.append(list(seen)))
    cfg = one_short_sample(TrainConfig(max_iters=2, eval_interval=2, batch_size=2))
    train(
        RunRequest(micro_cfg, cfg, data=small_corpus, backend_options={"compile": True}),
        on_event=seen.append,
    )
    (before,) = at_compile
    assert [type(e) for e in before] == [ev.Preparing] and "compiling" in before[0].line
    assert isinstance(seen[1], ev.RunStarted)
    seen.clear()
    train(
        RunRequest(micro_cfg, cfg, data=small_corpus, backend_options={"compile": False}),
        on_event=seen.append,
    )
    assert isinstance(seen[0], ev.RunStarted)  # nothing to wait for, nothing to announce


def test_non_finite_loss_fails_and_writes_no_checkpoint(micro_cfg, small_corpus, monkeypatch):
    from lal_core.backends.torch.backend import TorchBackend
    from lal_core.runs.checkpoints import STATE_FILE, read_state_header

    real_step = TorchBackend.train_step
    taken = []

    def poisoned(self, x, y, lr):  # the 13th step (iteration 12, after the eval at 10) fails
        taken.append(lr)
        loss = real_step(self, x, y, lr)
        return float("nan") if len(taken) == 13 else loss

    monkeypatch.setattr(TorchBackend, "train_step", poisoned)
    seen = []
    cfg = one_short_sample(TrainConfig(max_iters=50, eval_interval=10, batch_size=2))
    result = train(RunRequest(micro_cfg, cfg, data=small_corpus), on_event=seen.append)
    assert result.status == "failed" and len(taken) == 13
    (failed,) = [e for e in seen if isinstance(e, ev.RunFailed)]
    assert "nan at iter 12" in failed.message and "\n" not in failed.message
    saved = [(e.kind, e.iteration) for e in seen if isinstance(e, ev.CheckpointSaved)]
    assert saved[0] == ("best", 0) and all(k == "best" and i <= 10 for k, i in saved)
    # Nothing is written after the failure: no final checkpoint, the state is the last eval's.
    assert not (result.run_dir / "final.safetensors").exists()
    assert read_state_header(result.run_dir / STATE_FILE)["iteration"] == 10
    info = RunDir(result.run_dir).read()
    assert info.status == "failed" and info.error == failed.message
    assert [r.iteration for r in RunDir(result.run_dir).steps()] == list(range(12))
    # The run resumes from its last eval.
    monkeypatch.setattr(TorchBackend, "train_step", real_step)
    resumed = Trainer.resume(result.run_dir, max_iters=14).run_training()
    assert resumed.status == "completed" and resumed.iteration == 14
