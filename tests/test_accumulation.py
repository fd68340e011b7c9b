"""The recipe's batch on any hardware: a micro batch per forward pass, gradients accumulated."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from conftest import FAST, MICRO, assert_one_line_error, call_main, random_tokens
from lal_core import sft
from lal_core.backends import make_backend, mlx_available
from lal_core.backends.base import passes
from lal_core.errors import ConfigError
from lal_core.model.config import get_model_config
from lal_core.model.recipe import TrainConfig
from lal_core.runs.folder import RunDir
from lal_core.training.request import RunRequest
from lal_core.training.train import Trainer, train

NEEDS_MLX = pytest.mark.skipif(not mlx_available(), reason="no mlx")


def masked_batch(rows: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A batch whose rows count different numbers of targets (as SFT's answers do): row i's
    first 3 * i targets are ignored (-1), so a mean per pass would weigh them wrongly."""
    x = random_tokens((rows, 16), seed=seed)
    y = random_tokens((rows, 16), seed=seed + 1)
    for i in range(rows):
        y[i, : 3 * i] = -1
    return x, y


def trainer(backend_name: str, micro: int, rows: int):
    options = {"dtype": "float32", "compile": False} if backend_name == "torch" else {}
    b = make_backend(backend_name, MICRO, seed=0, **options)
    b.setup_training(TrainConfig(batch_size=rows, micro_batch=micro, lr=1e-2))
    return b


@pytest.mark.parametrize(
    "backend_name, micro",
    [("torch", 1), ("torch", 2), pytest.param("mlx", 2, marks=[NEEDS_MLX, pytest.mark.slow])],
)
def test_accumulated_passes_give_the_whole_batchs_gradient_and_loss(backend_name, micro):
    batch = masked_batch()
    whole, parts = trainer(backend_name, 0, 4), trainer(backend_name, micro, 4)
    want, got = whole.gradients(*batch), parts.gradients(*batch)
    assert set(got) == set(want)
    assert max(np.abs(got[k] - want[k]).max() for k in want) < 1e-5
    assert max(np.abs(want[k]).max() for k in want) > 1e-2  # gradients worth comparing
    # Steps: the same losses, step after step. (Adam's first steps move each weight by about
    # lr x the sign of its gradient, so a gradient of ~0 whose last bits differ moves a weight
    # the other way: later losses agree to about lr / 10, not to the gradients' 1e-5.)
    losses = [[b.train_step(*batch, 1e-3) for _ in range(3)] for b in (whole, parts)]
    assert np.allclose(losses[0], losses[1], atol=1e-4, rtol=0)
    assert losses[0][2] < losses[0][0]  # they did learn


def test_a_pass_weighs_by_its_counted_targets():
    x, y = masked_batch(rows=4)
    y[1] = -1  # a row with no counted target: its pass is left out
    split = passes(x, y, 1)
    assert len(split) == 3 and sum(share for _, _, share in split) == pytest.approx(1.0)
    counted = (y != -1).sum()
    assert [share for _, _, share in split] == pytest.approx(
        [(y[i] != -1).sum() / counted for i in (0, 2, 3)]
    )
    assert len(passes(x, y, 4)) == 1  # the whole batch: one pass, as without a micro batch


def test_a_micro_batch_that_does_not_divide_is_one_line(capsys):
    with pytest.raises(ConfigError, match="use one of 1, 2, 4, 8, 16"):
        TrainConfig(batch_size=16, micro_batch=3).validate()
    result = call_main(capsys, "train", "--batch-size", "12", "--micro-batch", "5")
    assert_one_line_error(result, 1, "micro-batch 5 does not divide batch-size 12")


def test_the_recompute_default_follows_the_micro_batch():
    small = get_model_config("small")
    whole = make_backend("torch", small, seed=0, device="cpu")
    whole.setup_training(TrainConfig(batch_size=128))
    micro = make_backend("torch", small, seed=0, device="cpu")
    micro.setup_training(TrainConfig(batch_size=128, micro_batch=16))
    assert whole.recompute and not micro.recompute


@pytest.mark.slow
def test_a_run_with_a_micro_batch_trains_as_without_and_resumes_with_another(
    small_corpus, tmp_path
):
    cfg = replace(FAST, batch_size=4, max_iters=8)
    options = {"dtype": "float32", "compile": False}
    runs = tmp_path / "runs"
    plain = train(RunRequest(MICRO, cfg, data=small_corpus, runs_dir=runs, backend_options=options))
    micro = train(
        RunRequest(
            MICRO,
            replace(cfg, micro_batch=1),
            data=small_corpus,
            runs_dir=runs,
            backend_options=options,
        )
    )
    a, b = RunDir(plain.run_dir).evals(), RunDir(micro.run_dir).evals()
    assert [e.iteration for e in a] == [e.iteration for e in b]
    assert np.allclose([e.val_loss for e in a], [e.val_loss for e in b], atol=1e-4, rtol=0)
    assert RunDir(micro.run_dir).read().train_config.micro_batch == 1
    # A resume may run with another micro batch: it changes how, not what, the run learns.
    resumed = Trainer.resume(
        micro.run_dir.name, runs_dir=runs, max_iters=12, micro_batch=2
    ).run_training()
    assert resumed.status == "completed"
    assert RunDir(micro.run_dir).read().train_config.micro_batch == 2


def test_sft_with_a_micro_batch_learns_as_without(chat_examples):
    cfg, examples = chat_examples
    losses = []
    for micro in (0, 1):
        b = make_backend("torch", cfg, seed=0, dtype="float32", compile=False)
        result = sft.fine_tune(b, examples, epochs=2, batch_size=4, micro_batch=micro)
        losses.append(result.losses)
    assert np.allclose(losses[0], losses[1], atol=1e-4, rtol=0)
    with pytest.raises(ConfigError, match="micro-batch 3 does not divide batch-size 4"):
        sft.fine_tune(b, examples, batch_size=4, micro_batch=3)


@pytest.fixture
def chat_examples():
    """The micro model with room for a chat example, and the built-in examples (rows of
    different answer lengths: the passes weigh differently)."""
    cfg = replace(MICRO, block_size=96)
    return cfg, sft.make_examples(sft.builtin_pairs(), cfg.block_size, repeat=1)
