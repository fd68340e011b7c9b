"""The CUDA fast paths, on a real GPU: skipped where there is none (CI), run where one is lent.

The CPU versions of these checks are in test_fast_paths.py; here the same promises are checked with
CUDA's defaults: bf16 autocast, torch.compile through Triton, fused AdamW on the device, TF32
matmuls, pinned non-blocking copies and the bf16 sampling copy.
"""

from __future__ import annotations

import functools
import json
import time
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import MICRO, next_token_kl, random_tokens, run_cli, stop_after
from lal_core.backends.torch.backend import TorchBackend
from lal_core.generation.sampling import generate_ids
from lal_core.model.config import get_model_config
from lal_core.model.recipe import TrainConfig
from lal_core.runs import events as ev
from lal_core.runs.checkpoints import load_weights
from lal_core.runs.folder import RunDir
from lal_core.training.request import RunRequest
from lal_core.training.train import Trainer, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


def batch(seed=0, shape=(4, MICRO.block_size)):
    return random_tokens(shape, seed), random_tokens(shape, seed + 1)


@pytest.fixture
def exact_fp32():
    """Call after building backends (which turn TF32 on): float32 matmuls without TF32, for
    comparisons tighter than TF32's 10-bit mantissa. TF32 is back on after the test."""
    yield lambda: _tf32(False)
    _tf32(True)


def _tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def build(cfg=MICRO, **options) -> TorchBackend:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b = TorchBackend(cfg, seed=0, device="cuda", **options)
        b.setup_training(TrainConfig(batch_size=4))
    fallbacks = [str(w.message) for w in caught if "training eagerly" in str(w.message)]
    assert not fallbacks, fallbacks  # compile must work on a CUDA machine with Triton
    return b


def test_cuda_defaults_are_the_fast_paths():
    b = build()
    assert b.device == "cuda"
    expected = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    assert (b.dtype, b.infer_dtype) == (expected, expected)
    assert (
        b.compile
        and b.compile_seconds is not None
        and not isinstance(b._train_loss, functools.partial)
    )
    assert b.fused and torch.backends.cuda.matmul.allow_tf32
    assert not b.chunked_loss  # the plain loss, inside the compiled graph
    assert all(p.dtype == torch.float32 and p.is_cuda for p in b.model.parameters())
    x, y = batch()
    losses = [b.train_step(x, y, 3e-3) for _ in range(25)]
    assert losses[-1] < losses[0] - 1.0  # one batch, learned
    assert all(v.dtype == np.float32 for v in b.state_dict().values())


def test_compiled_and_eager_give_the_same_loss_on_cuda(exact_fp32):
    compiled = build(dtype="float32", compile=True)
    eager = build(dtype="float32", compile=False)
    exact_fp32()
    for seed in (0, 2, 4):
        x, y = batch(seed)
        assert abs(compiled.train_step(x, y, 1e-3) - eager.train_step(x, y, 1e-3)) < 1e-4


def test_compiled_chunked_loss_matches_the_plain_one_on_cuda(exact_fp32):
    chunked = build(dtype="float32", compile=True, chunked_loss=True)
    plain = build(dtype="float32", compile=True, chunked_loss=False)
    exact_fp32()
    for seed in (0, 2):
        x, y = batch(seed)
        assert abs(chunked.train_step(x, y, 1e-3) - plain.train_step(x, y, 1e-3)) < 1e-4


def test_sampling_at_growing_lengths_is_fast_from_the_first_run():
    """Every new cache length is a new attention shape; no kernel may plan per shape (cuDNN's
    SDPA did: a fresh process sampled lal at 28 tokens/s)."""
    b = TorchBackend(get_model_config("small"), seed=0, device="cuda", compile=False)
    list(generate_ids(b, [198] * 4, 4, seed=0))  # CUDA's own start-up, not timed
    t0 = time.perf_counter()
    n = len(list(generate_ids(b, [198] * 4, 150, seed=0)))
    assert n / (time.perf_counter() - t0) > 100  # tokens/s; flash attention gives 500+


def test_bf16_autocast_is_within_1e_2_of_float32_on_cuda(exact_fp32):
    fp32 = build(dtype="float32", compile=False)
    bf16 = build(dtype="bfloat16", compile=False)
    exact_fp32()
    x, y = batch()
    assert abs(fp32.eval_loss(x, y) - bf16.eval_loss(x, y)) < 1e-2
    assert abs(fp32.train_step(x, y, 1e-3) - bf16.train_step(x, y, 1e-3)) < 1e-2


def test_float16_with_a_grad_scaler_trains_on_cuda():
    b = build(dtype="float16", compile=False)
    assert b._scaler is not None
    x, y = batch()
    losses = [b.train_step(x, y, 3e-3) for _ in range(25)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0] - 1.0


def test_fused_adamw_state_round_trips_on_cuda():
    a = build(compile=False, fused=True)
    x, y = batch()
    a.train_step(x, y, 1e-3)
    b = build(compile=False, fused=True)
    b.load_state_dict(a.state_dict())
    b.load_optimizer_state(a.optimizer_state())
    x2, y2 = batch(seed=5)
    assert a.train_step(x2, y2, 1e-3) == pytest.approx(b.train_step(x2, y2, 1e-3), abs=1e-5)


def test_kv_cache_and_recompute_agree_on_cuda(exact_fp32):
    b = TorchBackend(MICRO, seed=3, device="cuda", compile=False, infer_dtype="float32")
    exact_fp32()
    prompt = random_tokens((4,), seed=6).tolist()
    runs = [
        [t for t, _ in generate_ids(b, prompt, 24, temperature=0, use_cache=c)]
        for c in (True, False)
    ]
    assert runs[0] == runs[1]


def test_bf16_sampling_copy_keeps_the_distribution_on_cuda():
    a = TorchBackend(MICRO, seed=3, device="cuda", compile=False, infer_dtype="float32")
    b = TorchBackend(MICRO, seed=3, device="cuda", compile=False, infer_dtype="bfloat16")
    tokens = random_tokens((12,), seed=7).tolist()
    assert next_token_kl(a, b, tokens) < 1e-3
    streamed = [t for t, _ in generate_ids(b, tokens, 20, temperature=0.8, top_k=50, seed=1)]
    assert len(streamed) == 20


def test_compiled_cuda_checkpoint_loads_into_an_eager_cpu_model(
    small_corpus, micro_cfg, exact_fp32
):
    cfg = TrainConfig(max_iters=6, eval_interval=3, batch_size=4)
    result = train(RunRequest(micro_cfg, cfg, device="cuda", data=small_corpus))
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["device"] == "cuda"
    # The samples after each eval, drawn on the GPU between compiled steps.
    drawn = RunDir(result.run_dir).eval_samples()
    assert [s.iteration for s in drawn] == [0, 3, 6] and all(s.status == "done" for s in drawn)
    tensors, cfg = load_weights(result.run_dir / "final.safetensors")
    assert not any(k.startswith("_orig_mod.") for k in tensors)
    cpu = TorchBackend(cfg, seed=9, device="cpu", compile=False)
    gpu = TorchBackend(cfg, seed=8, device="cuda", compile=False)
    cpu.load_state_dict(tensors)
    gpu.load_state_dict(tensors)
    exact_fp32()
    x = random_tokens((1, 16))
    assert np.abs(cpu.logits(x) - gpu.logits(x)).max() < 1e-3


RESUME_CFG = TrainConfig(max_iters=12, eval_interval=5, batch_size=2, lr=2e-3, warmup_iters=3)


def stopped_and_resumed(model_cfg, corpus, **backend_options):
    """A CUDA run stopped after step 7, then resumed to the end."""
    stop = ev.StopRequest()
    first = Trainer(
        RunRequest(
            model_cfg, RESUME_CFG, device="cuda", data=corpus, backend_options=backend_options
        ),
        on_event=stop_after(7, stop),
        stop=stop,
    ).run_training()
    assert first.status == "stopped"
    return Trainer.resume(first.run_dir).run_training()


def test_stopped_cuda_run_resumes_and_completes(small_corpus, micro_cfg):
    resumed = stopped_and_resumed(replace(micro_cfg, dropout=0.1), small_corpus)
    assert resumed.status == "completed" and resumed.iteration == 12
    steps = [
        json.loads(line)["iter"]
        for line in (resumed.run_dir / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["type"] == "step"
    ]
    assert steps == list(range(12))


def test_eager_cuda_run_stopped_and_resumed_ends_bit_identical(small_corpus, micro_cfg):
    model_cfg = replace(micro_cfg, dropout=0.1)
    eager = {"compile": False}
    straight = train(
        RunRequest(model_cfg, RESUME_CFG, device="cuda", data=small_corpus, backend_options=eager)
    )
    resumed = stopped_and_resumed(model_cfg, small_corpus, **eager)
    a, _ = load_weights(straight.run_dir / "final.safetensors")
    b, _ = load_weights(resumed.run_dir / "final.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_cli_trains_and_samples_on_cuda(small_corpus):
    done = run_cli(
        "train", "--config", "tiny", "--max-iters", "30", "--eval-interval", "15",
        "--batch-size", "8", "--data", str(small_corpus), "--device", "cuda", timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "cuda" in done.stdout and "MFU" in done.stdout
    sampled = run_cli("sample", "--tokens", "20", "--seed", "1", "--device", "cuda")
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stdout.strip()
