"""Correctness of the fast paths (not their speed): chunked loss, autocast, compile, sampling."""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import MICRO, next_token_kl, random_tokens
from lal_core.backends import make_backend
from lal_core.backends.torch import backend as torch_backend
from lal_core.backends.torch import cpu_threads, int8_head, precision
from lal_core.backends.torch import sampler as torch_sampling
from lal_core.backends.torch.backend import TorchBackend
from lal_core.backends.torch.chunked_loss import linear_cross_entropy
from lal_core.backends.torch.device import measure_matmul_flops
from lal_core.backends.torch.int8_head import Int8Head, int8_head_works
from lal_core.backends.torch.precision import compile_available
from lal_core.backends.torch.training_loss import TrainingLoss
from lal_core.errors import ConfigError
from lal_core.generation.controls import Controls
from lal_core.generation.sampling import Generation, generate_ids
from lal_core.model.config import ModelConfig, count_parameters, get_model_config
from lal_core.model.cost import (
    attention_weight_bytes,
    estimate_training_memory,
    flops_per_token,
    mfu,
    saved_activation_bytes,
)
from lal_core.model.gpt import GPT
from lal_core.model.recipe import TrainConfig
from lal_core.runs.checkpoints import load_weights, save_weights

SHORT = ModelConfig("short", n_layer=2, n_head=2, n_embd=32, block_size=16)


def batch(seed=0, shape=(2, MICRO.block_size)):
    return random_tokens(shape, seed), random_tokens(shape, seed + 1)


# -- the chunked linear + cross-entropy ---------------------------------------------------------
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_chunked_loss_equals_plain_loss_and_gradients(chunk, smoothing):
    torch.manual_seed(0)
    x = torch.randn(50, 16, requires_grad=True)
    w = (torch.randn(300, 16) * 0.5).requires_grad_()
    t = torch.randint(0, 300, (50,))
    t[[3, 10, 11]] = -1  # ignored, as SFT's prompt tokens are
    plain = F.cross_entropy(F.linear(x, w), t, ignore_index=-1, label_smoothing=smoothing)
    gx, gw = torch.autograd.grad(plain * 3.0, (x, w))
    loss = linear_cross_entropy(x, w, t, chunk=chunk, label_smoothing=smoothing)
    cx, cw = torch.autograd.grad(loss * 3.0, (x, w))  # a scaled loss scales the gradients
    assert abs(loss.item() - plain.item()) < 1e-5
    assert torch.allclose(cx, gx, atol=1e-6) and torch.allclose(cw, gw, atol=1e-6)
    with torch.no_grad():
        again = linear_cross_entropy(x, w, t, chunk=chunk, label_smoothing=smoothing)
        assert abs(again.item() - plain.item()) < 1e-5
    if smoothing:  # and it is not the unsmoothed loss
        assert abs(loss.item() - linear_cross_entropy(x, w, t, chunk=chunk).item()) > 1e-3


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_chunked_loss_under_autocast_matches_the_plain_loss(dtype, smoothing):
    # Both run the matmuls in 16 bits and the softmax in float32.
    torch.manual_seed(0)
    x = torch.randn(50, 16, requires_grad=True)
    w = (torch.randn(300, 16) * 0.5).requires_grad_()
    t = torch.randint(0, 300, (50,))
    t[[3, 10, 11]] = -1
    with torch.autocast("cpu", dtype=dtype):
        logits = F.linear(x, w).float()
        plain = F.cross_entropy(logits, t, ignore_index=-1, label_smoothing=smoothing)
        chunked = linear_cross_entropy(x, w, t, chunk=16, label_smoothing=smoothing)
    gx, gw = torch.autograd.grad(plain, (x, w))
    cx, cw = torch.autograd.grad(chunked, (x, w))
    assert abs(plain.item() - chunked.item()) < 1e-3
    torch.testing.assert_close(cx, gx, atol=2e-4, rtol=2e-2)
    torch.testing.assert_close(cw, gw, atol=2e-4, rtol=2e-2)


def test_the_chunked_eval_loss_under_autocast_takes_its_softmax_in_float32():
    # Without gradients the loss is all there is: it must be the plain loss of the 16-bit
    # logits to float32 accuracy, not to the 16-bit probabilities' 3 digits.
    torch.manual_seed(0)
    x, w = torch.randn(200, 16), torch.randn(3000, 16)
    t = torch.randint(0, 3000, (200,))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain = F.cross_entropy(F.linear(x, w).float(), t)
        chunked = linear_cross_entropy(x, w, t, chunk=64)
    assert abs(plain.item() - chunked.item()) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_target_whose_probability_underflows_keeps_its_true_loss(dtype):
    # exp(-120) is below the smallest float: read from the softmax, the loss would be inf.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], requires_grad=True)
    w = torch.tensor([[60.0, 0.0], [-60.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([1, 2, 0])  # rows 0 and 2: the target 120 below the best logit
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype != torch.float32):
        plain = F.cross_entropy(F.linear(x, w).float(), t)
        chunked = linear_cross_entropy(x, w, t, chunk=1)  # recomputed a row at a time
    (gx,) = torch.autograd.grad(chunked, x)
    assert torch.isfinite(chunked) and abs(chunked.item() - plain.item()) < 1e-4 * plain.item()
    assert chunked.item() > 80  # (120 + a small one + 120) / 3
    assert torch.isfinite(gx).all()


def test_chunked_loss_with_every_target_ignored_is_zero_not_nan():
    x, w = torch.randn(4, 8, requires_grad=True), torch.randn(20, 8)
    loss = linear_cross_entropy(x, w, torch.full((4,), -1))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(x.grad == 0)


def test_chunked_loss_hands_its_gradients_over_once_scaled_by_the_incoming_gradient():
    x, w = torch.randn(6, 8, requires_grad=True), torch.randn(20, 8, requires_grad=True)
    t = torch.tensor([1, 2, -1, 3, 4, 5])
    (3.0 * linear_cross_entropy(x, w, t)).backward()
    want_x, want_w = torch.autograd.grad(
        3.0 * F.cross_entropy(x @ w.t(), t, ignore_index=-1), (x, w)
    )
    torch.testing.assert_close(x.grad, want_x)
    torch.testing.assert_close(w.grad, want_w)
    loss = linear_cross_entropy(x, w, t)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="runs once"):
        loss.backward()


def loss_and_grads(model: GPT, loss_fn, x, y) -> tuple[float, list[torch.Tensor]]:
    model.zero_grad()
    loss = loss_fn(model, x, y)
    loss.backward()
    return loss.item(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "plain"])
@pytest.mark.parametrize("recompute", [False, True], ids=["kept", "recomputed"])
def test_the_backends_training_loss_is_the_models_loss(micro_cfg, chunked, recompute):
    # The lesson's forward is the reference: every fast path gives its loss and gradients.
    torch.manual_seed(0)
    model = GPT(micro_cfg)
    x, y = (torch.from_numpy(a) for a in batch())
    y[0, :5] = -1  # ignored targets, as in SFT
    want, want_grads = loss_and_grads(model, lambda m, a, b: m(a, b)[1], x, y)
    got, grads = loss_and_grads(model, TrainingLoss(chunked, recompute), x, y)
    assert abs(got - want) < 1e-5
    assert all(torch.allclose(g, h, atol=1e-6) for g, h in zip(grads, want_grads, strict=True))
    logits, _ = model(x)
    plain = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-1)
    assert abs(plain.item() - want) < 1e-5


def test_the_loss_path_is_chosen_per_device(micro_cfg):
    cpu = TorchBackend(micro_cfg, seed=0, device="cpu", compile=False)
    assert cpu.chunked_loss and cpu.loss.chunked and "chunked loss" in cpu.describe()
    plain = TorchBackend(micro_cfg, seed=0, device="cpu", compile=False, chunked_loss=False)
    assert not plain.loss.chunked and "plain loss" in plain.describe()
    assert not precision.default_chunked_loss(torch.device("cuda"))
    x, y = batch()
    assert abs(cpu.eval_loss(x, y) - plain.eval_loss(x, y)) < 1e-5


# -- mixed precision ----------------------------------------------------------------------------
def test_bf16_autocast_loss_is_within_1e_2_of_float32(micro_cfg):
    fp32 = TorchBackend(micro_cfg, seed=0, device="cpu", dtype="float32", compile=False)
    bf16 = TorchBackend(micro_cfg, seed=0, device="cpu", dtype="bfloat16", compile=False)
    x, y = batch()
    assert abs(fp32.eval_loss(x, y) - bf16.eval_loss(x, y)) < 1e-2
    for b in (fp32, bf16):
        b.setup_training(TrainConfig(batch_size=2))
    a, b = fp32.train_step(x, y, 1e-3), bf16.train_step(x, y, 1e-3)
    assert abs(a - b) < 1e-2
    # Master weights, optimizer moments and checkpoints stay float32.
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    assert all(v.dtype == np.float32 for v in bf16.state_dict().values())
    assert all(v.dtype == np.float32 for k, v in bf16.optimizer_state().items() if k[:2] == "m.")


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16-cpu", "emulated-bf16-cpu"])
def test_the_training_dtype_follows_the_cpus_bf16(native, micro_cfg, monkeypatch):
    # Both CPU kinds CI meets (AMX/AVX-512 BF16 Xeon, AVX2 EPYC), whichever this one is.
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: native)
    b = TorchBackend(micro_cfg, seed=0, device="cpu", compile=False)
    assert b.dtype == ("bfloat16" if native else "float32")
    assert b.prompt_dtype == ("bfloat16" if native else "float32")
    assert TorchBackend(micro_cfg, device="cpu", dtype="float32").dtype == "float32"


def test_float16_trains_with_a_grad_scaler(micro_cfg):
    b = TorchBackend(micro_cfg, seed=0, device="cpu", dtype="float16", compile=False)
    b.setup_training(TrainConfig(batch_size=2))
    assert b._scaler is not None
    x, y = batch()
    losses = [b.train_step(x, y, 1e-3) for _ in range(3)]
    assert all(np.isfinite(losses))


def test_float16_loss_scale_survives_a_resume(micro_cfg):
    a = TorchBackend(micro_cfg, seed=0, device="cpu", dtype="float16", compile=False)
    a.setup_training(TrainConfig(batch_size=2))
    a.train_step(*batch(), 1e-3)
    a._scaler.update(1024.0)  # as if overflows had lowered it
    b = TorchBackend(micro_cfg, seed=1, device="cpu", dtype="float16", compile=False)
    b.setup_training(TrainConfig(batch_size=2))
    b.load_state_dict(a.state_dict())
    b.load_optimizer_state(a.optimizer_state())
    assert b._scaler.get_scale() == 1024.0
    x, y = batch(seed=5)
    assert a.train_step(x, y, 1e-3) == b.train_step(x, y, 1e-3)
    assert a._scaler.get_scale() == b._scaler.get_scale()


def test_dtype_is_checked_and_options_pass_through_make_backend(micro_cfg):
    b = make_backend("torch", micro_cfg, dtype="float32", compile=False, fused=False)
    assert (b.dtype, b.compile, b.fused) == ("float32", False, False)
    with pytest.raises(ConfigError, match="dtype"):
        make_backend("torch", micro_cfg, dtype="float8")


def test_fused_adamw_state_round_trips(micro_cfg):
    a = TorchBackend(micro_cfg, seed=0, device="cpu", compile=False, fused=True)
    a.setup_training(TrainConfig(batch_size=2))
    x, y = batch()
    a.train_step(x, y, 1e-3)
    b = TorchBackend(micro_cfg, seed=1, device="cpu", compile=False, fused=True)
    b.setup_training(TrainConfig(batch_size=2))
    b.load_state_dict(a.state_dict())
    b.load_optimizer_state(a.optimizer_state())
    x2, y2 = batch(seed=5)
    assert a.train_step(x2, y2, 1e-3) == pytest.approx(b.train_step(x2, y2, 1e-3), abs=1e-6)


# -- activation checkpointing -------------------------------------------------------------------
def block_activation_bytes(model: GPT, x: torch.Tensor, loss_fn=None) -> int:
    """Bytes autograd keeps for backward while the blocks run forward (parameters aside)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}
    inside = [False]
    first = model.blocks[0].register_forward_pre_hook(lambda *_: inside.__setitem__(0, True))
    last = model.blocks[-1].register_forward_hook(lambda *_: inside.__setitem__(0, False))

    def pack(t):
        storage = t.untyped_storage()
        if inside[0] and storage.data_ptr() not in params:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        (loss_fn or TrainingLoss(chunked=True, recompute=False))(model, x, x)
    first.remove()
    last.remove()
    return sum(kept.values())


@pytest.mark.parametrize("cpu_dropout", [False, True], ids=["torch-masks", "16-bit-masks"])
def test_recompute_gives_the_same_loss_and_gradients_for_less_memory(cpu_dropout):
    cfg = ModelConfig("wide", n_layer=3, n_head=2, n_embd=64, block_size=32, dropout=0.1)
    x, y = batch(shape=(4, cfg.block_size))
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    results, kept = [], []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = GPT(cfg)
        loss_fn = TrainingLoss(chunked=True, recompute=recompute, cpu_dropout=cpu_dropout)
        kept.append(block_activation_bytes(model, x, loss_fn))
        torch.manual_seed(1)  # the same dropout masks for both, if recomputing redraws alike
        results.append(loss_and_grads(model, loss_fn, x, y))
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    assert kept[0] > 0 and kept[1] < kept[0] / 4  # not the blocks' insides


def test_recompute_is_on_by_default_only_where_activations_are_large():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    lal = get_model_config("lal")
    assert precision.default_recompute(cpu, lal, 16)
    assert not precision.default_recompute(cpu, lal, 8)
    assert not precision.default_recompute(cpu, get_model_config("small"), 16)
    assert not precision.default_recompute(cuda, lal, 16)
    b = TorchBackend(MICRO, seed=0, device="cpu", compile=False, recompute=True)
    b.setup_training(TrainConfig(batch_size=2))
    assert b.recompute and "recomputed activations" in b.describe()
    loss = b.train_step(*batch(), 1e-3)
    assert np.isfinite(loss)


# -- sampling -----------------------------------------------------------------------------------
def test_prefill_last_position_equals_the_full_logits():
    b = TorchBackend(SHORT, seed=3, device="cpu", compile=False, infer_dtype="float32")
    tokens = random_tokens((9,), seed=4).tolist()
    full = b.logits(np.array([tokens]))[0, -1]
    b.start_generation(1)
    for use_cache in (True, False):
        assert np.abs(b.prefill(np.array([tokens]), use_cache)[0].numpy() - full).max() < 1e-5


def test_kv_cache_and_full_recompute_generation_agree():
    b = TorchBackend(SHORT, seed=3, device="cpu", compile=False, infer_dtype="float32")
    prompt = random_tokens((4,), seed=6).tolist()
    runs = [
        [t for t, _ in generate_ids(b, prompt, 30, temperature=0, use_cache=c)]
        for c in (True, False)
    ]
    assert runs[0] == runs[1]
    sampled = [
        [t for t, _ in generate_ids(b, prompt, 30, temperature=1.0, seed=9, use_cache=c)]
        for c in (True, False)
    ]
    assert sampled[0] == sampled[1]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_16bit_sampling_weights_keep_the_distribution(dtype):
    a = TorchBackend(SHORT, seed=3, device="cpu", compile=False, infer_dtype="float32")
    b = TorchBackend(SHORT, seed=3, device="cpu", compile=False, infer_dtype=dtype)
    assert next_token_kl(a, b, random_tokens((12,), seed=7).tolist()) < 1e-3
    assert dtype in b.sampler._weights and b.model.wte.weight.dtype == torch.float32
    assert b.sampler._cache.k[0].dtype == getattr(torch, dtype)  # one-token steps in 16 bits


def test_int8_head_is_within_its_rounding_of_the_float_product():
    torch.manual_seed(0)
    w = torch.randn(500, 64) * torch.rand(500, 1) * 3  # rows of different sizes
    x = torch.randn(3, 64)
    head = Int8Head(w)
    assert head.weight.dtype == torch.int8 and head.weight.abs().max() == 127
    got = head(x).float()  # (3, 500), in bfloat16
    exact = x @ w.t()
    x16 = x.to(torch.bfloat16).float()
    # Each weight is off by at most half its row's step, and x and the logits are rounded to
    # bfloat16 (relative 2**-8 at most).
    bound = (
        x16.abs() @ (head.scales.float() / 2 + 1e-6).expand(64, -1)
        + (x - x16).abs() @ w.abs().t()
        + exact.abs() * 2**-8
    )
    assert ((got - exact).abs() <= bound * 1.01).all()
    assert (got - exact).abs().max() < 0.02 * exact.abs().max()


def test_the_int8_probe_checks_the_kernels_numbers_at_the_heads_own_shape(monkeypatch):
    # Runs on every CPU: the kernel is replaced by a correct one and by two wrong ones (what
    # an AVX-512 CPU returned for a width of 24 or 8), whatever this CPU's own kernel does.
    calls = []

    def exact(x, q, s):
        calls.append((tuple(x.shape), tuple(q.shape)))
        return (x.float() @ q.float().t() * s.float()).to(x.dtype)

    def garbage(x, q, s):
        return torch.full((x.shape[0], q.shape[0]), 1.1e33, dtype=x.dtype)

    def one_row_off(x, q, s):
        out = exact(x, q, s)
        out[0, -1] += out.abs().max()  # right but for the last row: a tail bug
        return out

    for kernel, works in ((exact, True), (garbage, False), (one_row_off, False)):
        monkeypatch.setattr(int8_head, "_INT8_MM", kernel)
        assert int8_head_works.__wrapped__(torch.device("cpu"), 48, 50257) is works
    assert set(calls) == {((1, 48), (50257, 48))}  # only ever the head's own shape
    calls.clear()
    assert int8_head_works.__wrapped__(torch.device("cpu"), 48, 50257, 5) is False
    assert set(calls) == {((5, 48), (50257, 48))}  # and for 5 samples drawn together, 5 rows
    monkeypatch.setattr(int8_head, "_INT8_MM", None)  # a torch without the op
    assert int8_head_works.__wrapped__(torch.device("cpu"), 48, 50257) is False


def test_a_wrong_int8_kernel_keeps_the_bf16_head(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    for module in (precision, torch_backend):
        monkeypatch.setattr(module, "int8_head_works", lambda device, k, n, rows=1: False)
    assert not TorchBackend(SHORT, device="cpu").int8_head  # the default falls back
    with pytest.raises(ConfigError, match="int8 head kernel is missing or wrong"):
        TorchBackend(SHORT, device="cpu", int8_head=True)


# This CPU's own int8 kernel at the test models' width (the probe above runs everywhere).
int8_kernel_here = pytest.mark.skipif(
    not int8_head_works(torch.device("cpu"), SHORT.n_embd, SHORT.vocab_size),
    reason="this CPU's int8 kernel fails its probe at width 32, so the int8 head stays off here",
)


def peaked(cfg: ModelConfig, **options) -> TorchBackend:
    """A backend whose next-token distributions are peaked, as a trained model's are (a fresh
    model's are near uniform, where any rounding looks harmless)."""
    b = TorchBackend(cfg, seed=3, device="cpu", compile=False, **options)
    state = b.state_dict()
    state["wte.weight"] = state["wte.weight"] * 30
    b.load_state_dict(state)
    return b


@int8_kernel_here
def test_int8_head_keeps_the_distribution():
    a = peaked(SHORT, infer_dtype="float32")
    b = peaked(SHORT, infer_dtype="bfloat16", int8_head=True)
    tokens = random_tokens((12,), seed=7).tolist()
    a.start_generation(1)
    assert torch.softmax(a.prefill(np.array([tokens])), -1).max() > 0.5  # peaked indeed
    assert next_token_kl(a, b, tokens) < 1e-3
    assert isinstance(b.sampler._weights["bfloat16"].head, Int8Head)  # the one-token steps used it
    assert not isinstance(a.sampler.weights("float32").head, Int8Head)
    greedy = [[t for t, _ in generate_ids(m, tokens, 8, temperature=0)] for m in (a, b)]
    assert greedy[0] == greedy[1]


@int8_kernel_here
def test_int8_head_serves_a_batch_of_samples_as_each_alone():
    b = peaked(SHORT, infer_dtype="bfloat16", int8_head=True)
    prompt = random_tokens((6,), seed=8).tolist()
    together = Generation(b, prompt, 12, Controls(temperature=0), 4, seed=3).run()
    assert isinstance(b.sampler._decode_weights().head, Int8Head)  # at 4 rows too
    alone = Generation(b, prompt, 12, Controls(temperature=0), 1, seed=3).run()[0]
    assert all(s.tokens == alone.tokens for s in together)


@int8_kernel_here
@pytest.mark.parametrize("native_bf16", [False, True])
def test_int8_head_is_the_default_on_cpus(monkeypatch, native_bf16):
    # measured faster where bf16 is emulated and where it is native (bench/README.md)
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: native_bf16)
    assert TorchBackend(SHORT, device="cpu").int8_head
    assert not TorchBackend(SHORT, device="cpu", int8_head=False).int8_head
    assert not TorchBackend(SHORT, device="cpu", infer_dtype="float16").int8_head
    with pytest.raises(ConfigError, match="bfloat16"):
        TorchBackend(SHORT, device="cpu", infer_dtype="float32", int8_head=True)


@pytest.mark.parametrize("controls", [Controls(temperature=0), Controls(top_k=20)])
def test_one_token_steps_without_onednn_draw_what_onednn_draws(monkeypatch, controls):
    # The fast path (torch's own kernels for a one-token step) against the plain one (oneDNN's),
    # same bf16 weights: the same greedy tokens and the same seeded samples.
    b = peaked(SHORT, infer_dtype="bfloat16", int8_head=False)
    prompt = random_tokens((5,), seed=4).tolist()
    steps, without_onednn = [], torch_sampling.without_onednn

    def counted():
        steps.append(torch.backends.mkldnn.enabled)
        return without_onednn()

    monkeypatch.setattr(torch_sampling, "without_onednn", counted)
    before = torch.backends.mkldnn.enabled
    fast = Generation(b, prompt, 10, controls, 2, seed=11).run()
    assert len(steps) == 9 and torch.backends.mkldnn.enabled == before  # and it is back after
    monkeypatch.setattr(torch_sampling, "without_onednn", contextlib.nullcontext)
    plain = Generation(b, prompt, 10, controls, 2, seed=11).run()
    assert [s.tokens for s in fast] == [s.tokens for s in plain]


def test_prompts_run_in_float32_where_16bit_matmuls_are_emulated(monkeypatch):
    # On a CPU without native bf16 a prompt's forward (compute-bound) would be several times
    # slower in 16 bits; the one-token steps after it (memory-bound) still read 16-bit weights.
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    b = TorchBackend(SHORT, seed=3, device="cpu", compile=False)
    assert (b.infer_dtype, b.prompt_dtype) == ("bfloat16", "float32")
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    b = TorchBackend(SHORT, seed=3, device="cpu", compile=False)
    assert (b.infer_dtype, b.prompt_dtype) == ("bfloat16", "bfloat16")


def threads_seen_while_sampling(b: TorchBackend, monkeypatch) -> set[int]:
    seen: list[int] = []
    real = torch_sampling.DecodeWeights.last_logits

    def recording(weights, idx, cache):
        seen.append(torch.get_num_threads())
        return real(weights, idx, cache)

    with monkeypatch.context() as m:
        m.setattr(torch_sampling.DecodeWeights, "last_logits", recording)
        list(generate_ids(b, [1, 2], 3, seed=0))
    assert seen
    return set(seen)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_sampling_takes_one_thread_while_this_process_trains(monkeypatch, two_threads):
    # Idle, sampling uses torch's threads; while a run trains in the same process (the
    # dashboard), one, so the two do not wait on each other's time slices.
    activity = cpu_threads.TrainingActivity(grace=60.0)
    for module in (torch_backend, torch_sampling):
        monkeypatch.setattr(module, "TRAINING", activity)
    monkeypatch.setattr(torch_sampling, "sampling_threads", lambda: 0)  # the cores are free
    b = TorchBackend(SHORT, seed=3, device="cpu", compile=False, infer_dtype="float32")
    assert threads_seen_while_sampling(b, monkeypatch) == {2}
    trainer = TorchBackend(SHORT, seed=3, device="cpu", compile=False)
    trainer.setup_training(TrainConfig(batch_size=2))
    trainer.train_step(*batch(shape=(2, SHORT.block_size)), 1e-3)
    assert activity.busy()  # the step just ended: the run is between steps
    assert threads_seen_while_sampling(b, monkeypatch) == {1}
    assert torch.get_num_threads() == 2  # given back after sampling


def test_sampling_leaves_the_cores_other_threads_run_on(monkeypatch, two_threads):
    monkeypatch.setattr(torch_sampling, "TRAINING", cpu_threads.TrainingActivity())  # idle
    b = TorchBackend(SHORT, seed=3, device="cpu", compile=False, infer_dtype="float32")
    monkeypatch.setattr(cpu_threads, "free_cores", lambda: 1)  # another process runs on one
    assert threads_seen_while_sampling(b, monkeypatch) == {1}
    monkeypatch.setattr(cpu_threads, "free_cores", lambda: 0)  # on both: still one thread
    assert threads_seen_while_sampling(b, monkeypatch) == {1}
    monkeypatch.setattr(cpu_threads, "free_cores", lambda: None)  # unknown: torch's setting
    assert threads_seen_while_sampling(b, monkeypatch) == {2}
    pinned = TorchBackend(SHORT, seed=3, device="cpu", compile=False, decode_threads=2)
    monkeypatch.setattr(cpu_threads, "free_cores", lambda: 0)
    assert threads_seen_while_sampling(pinned, monkeypatch) == {2}  # the user's choice stands


@pytest.mark.skipif(not Path("/proc/loadavg").exists(), reason="Linux /proc only")
def test_free_cores_counts_this_process_as_not_other_work():
    assert cpu_threads.own_runnable_threads() >= 1  # the reader itself is running
    free = cpu_threads.free_cores()
    assert free is not None and 0 <= free <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    "text, runnable", [("0.52 0.58 0.59 3/467 12345", 3), ("1.0 1.0 1.0", None), ("", None)]
)
def test_runnable_threads_are_read_from_loadavg(text, runnable):
    assert cpu_threads.runnable_threads(text) == runnable


# -- torch.compile ------------------------------------------------------------------------------
# On the CPU (where compiling is opt-in) these trace the training loss through TorchDynamo and
# AOTAutograd as compiling does, with the "aot_eager" backend: Inductor's C++ code generation
# would take half a minute on a fresh machine and is torch's to test. tests/test_cuda.py
# compiles for real with Inductor, CUDA's default.
@pytest.fixture(scope="module")
def compiled_and_eager():
    ok, why = compile_available(torch.device("cpu"))
    if not ok:
        pytest.skip(f"torch.compile cannot work here: {why}")
    backends = []
    real_compile = torch.compile
    for compile in (True, False):
        b = TorchBackend(MICRO, seed=0, device="cpu", dtype="float32", compile=compile)
        with warnings.catch_warnings(record=True) as caught, pytest.MonkeyPatch.context() as m:
            warnings.simplefilter("always")
            m.setattr(torch, "compile", lambda fn: real_compile(fn, backend="aot_eager"))
            b.setup_training(TrainConfig(batch_size=2))
        fallbacks = [str(w.message) for w in caught if "training eagerly" in str(w.message)]
        assert not fallbacks, fallbacks  # compile works here: a fallback must not pass unnoticed
        backends.append(b)
    return backends


@pytest.mark.slow
def test_compiled_and_eager_give_the_same_loss(compiled_and_eager):
    compiled, eager = compiled_and_eager
    assert compiled.compile and compiled.compile_seconds is not None
    assert not isinstance(compiled._train_loss, functools.partial)  # the compiled one
    for seed in (0, 2):
        x, y = batch(seed)
        a, b = compiled.train_step(x, y, 1e-3), eager.train_step(x, y, 1e-3)
        assert abs(a - b) < 1e-4


@pytest.mark.slow
def test_checkpoint_from_a_compiled_model_loads_into_an_eager_one(compiled_and_eager, tmp_path):
    compiled, _ = compiled_and_eager
    state = compiled.state_dict()
    assert not any(k.startswith("_orig_mod.") for k in state)
    path = tmp_path / "best.safetensors"
    save_weights(path, state, MICRO)
    tensors, cfg = load_weights(path)
    eager = TorchBackend(cfg, seed=9, device="cpu", compile=False)
    eager.load_state_dict(tensors)
    x = random_tokens((1, 8))
    assert np.abs(eager.logits(x) - compiled.logits(x)).max() < 1e-6


def test_compile_falls_back_to_eager_with_a_notice(micro_cfg, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler today")

    monkeypatch.setattr(torch, "compile", broken)
    b = TorchBackend(micro_cfg, seed=0, device="cpu", compile=True)
    with pytest.warns(UserWarning, match="training eagerly"):
        b.setup_training(TrainConfig(batch_size=2))
    assert not b.compile and isinstance(b._train_loss, functools.partial)  # eager
    x, y = batch()
    assert np.isfinite(b.train_step(x, y, 1e-3))


# -- figures ------------------------------------------------------------------------------------
def test_flops_per_token_and_mfu():
    cfg = get_model_config("lal")
    expected = 6 * (count_parameters(cfg) - 512 * 768) + 12 * 12 * 768 * 512
    assert flops_per_token(cfg) == expected
    assert mfu(1000.0, cfg, 1e12) == pytest.approx(1000 * expected / 1e12)
    assert mfu(1000.0, cfg, None) is None


def test_measuring_the_peak_leaves_training_randomness_alone():
    """The CPU's MFU peak is measured on random matrices; drawing them from torch's global
    generator shifted the dropout masks of the first run in a process (two identical runs in
    the dashboard differed)."""
    before = torch.get_rng_state()
    measure_matmul_flops.__wrapped__("cpu", "float32", 64)
    assert torch.equal(before, torch.get_rng_state())


def test_the_memory_estimate_follows_what_autograd_keeps():
    # saved_activation_bytes's 16 floats per position, channel and layer, measured with hooks.
    cfg = ModelConfig("wide", n_layer=3, n_head=2, n_embd=64, block_size=32)
    x = torch.from_numpy(random_tokens((4, cfg.block_size)))
    measured = block_activation_bytes(GPT(cfg), x)
    assert 0.8 < measured / saved_activation_bytes(cfg, 4) < 1.25
    # With dropout the attention runs unfused and keeps its (B, nh, T, T) weights: at T = 256
    # they are three quarters of what the blocks keep (without them the estimate was 0.25x).
    cfg = replace(cfg, block_size=256, n_head=4, dropout=0.1)
    measured = block_activation_bytes(GPT(cfg), torch.from_numpy(random_tokens((4, 256))))
    expected = saved_activation_bytes(cfg, 4) + attention_weight_bytes(cfg, 4)
    assert 0.9 < measured / expected < 1.1
    # lal at batch 16 recomputes, so it is estimated (and measured: 4.9 GB) under 8 GB.
    lal = get_model_config("lal")
    assert estimate_training_memory(lal, 16) < 8e9
