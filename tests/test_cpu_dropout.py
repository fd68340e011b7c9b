"""Dropout on a CPU from 16-bit draws (`lal_core/backends/torch/cpu_dropout.py`): the same
inverted dropout and attention the model computes, with masks at the rate asked for, drawn
from torch's generator so a seed (and a resume) gives them again."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import MICRO, random_tokens
from lal_core.backends.torch.backend import TorchBackend
from lal_core.backends.torch.cpu_dropout import CPUDropout, attention, dropout, keep_scale
from lal_core.model.recipe import TrainConfig


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_masks_drop_at_the_rate_asked_and_scale_what_they_keep(p):
    torch.manual_seed(0)
    n = 1_000_003  # not a multiple of the four numbers a draw gives
    mask = keep_scale((n,), p, torch.empty(0))
    dropped = (mask == 0).double().mean().item()
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert torch.equal(mask[mask != 0], torch.full_like(mask[mask != 0], 1 / (1 - p)))
    # Neighbours are independent: the four numbers of one draw are not alike.
    pairs = (mask[:-1] == 0) & (mask[1:] == 0)
    assert abs(pairs.double().mean().item() - p * p) < 5 * math.sqrt(p * p / n)


def test_masks_come_from_torchs_generator_whatever_the_thread_count():
    masks = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        torch.manual_seed(3)
        masks.append(keep_scale((16, 4, 64, 64), 0.1, torch.empty(0, dtype=torch.bfloat16)))
    assert torch.equal(masks[0], masks[1]) and masks[0].dtype == torch.bfloat16
    torch.manual_seed(4)
    assert not torch.equal(keep_scale((16, 4, 64, 64), 0.1, masks[0]), masks[0])


def test_dropout_is_x_times_its_mask():
    x = torch.randn(8, 16, 32, requires_grad=True)
    torch.manual_seed(5)
    y = dropout(x, 0.2)
    torch.manual_seed(5)
    mask = keep_scale(x.shape, 0.2, x)
    assert torch.equal(y, x * mask)
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, mask)


def reference_attention(q, k, v, keep):
    """softmax(q k^T / sqrt(hd), causal) * keep, times v, in float64."""
    q, k, v = q.double(), k.double(), v.double()
    T = q.shape[-2]
    att = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    att = att.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return (torch.softmax(att, dim=-1) * keep.double()) @ v


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_with_dropout_is_the_formula_with_its_mask(dtype):
    B, nh, T, hd = 2, 3, 16, 8
    torch.manual_seed(0)
    leaves = [torch.randn(B, nh, T, hd, requires_grad=True) for _ in range(3)]
    q, k, v = (t.to(dtype) for t in leaves)
    torch.manual_seed(9)
    y = attention(q, k, v, 0.25, causal=True)
    torch.manual_seed(9)
    keep = keep_scale((B, nh, T, T), 0.25, q)
    want = reference_attention(*leaves, keep)
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 3e-2, "rtol": 3e-2}
    torch.testing.assert_close(y.double(), want, **tol)
    g = torch.randn_like(want)
    got = torch.autograd.grad(y, leaves, g.to(dtype))
    wanted = torch.autograd.grad(want, leaves, g)  # float32 leaves: their grads too
    for a, b in zip(got, wanted, strict=True):
        torch.testing.assert_close(a, b, **tol)


def test_the_mode_answers_dropout_and_attention_calls_and_leaves_the_rest():
    x = torch.randn(4, 16, 8)
    q, k, v = (torch.randn(2, 2, 16, 8) for _ in range(3))
    with CPUDropout():
        torch.manual_seed(1)
        got = (
            F.dropout(x, 0.1),
            F.scaled_dot_product_attention(q, k, v, dropout_p=0.1, is_causal=True),
        )
        # p = 0, and eval: the calls as they are, bit for bit.
        same = (
            F.dropout(x, 0.0),
            F.dropout(x, 0.1, training=False),
            F.scaled_dot_product_attention(q, k, v, is_causal=True),
        )
    torch.manual_seed(1)
    assert torch.equal(got[0], dropout(x, 0.1))
    assert torch.equal(got[1], attention(q, k, v, 0.1, causal=True))
    assert torch.equal(same[0], x) and torch.equal(same[1], x)
    assert torch.equal(same[2], F.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_eager_cpu_training_with_dropout_takes_the_16bit_masks_and_learns():
    backend = TorchBackend(replace(MICRO, dropout=0.1), seed=0, compile=False)
    backend.setup_training(TrainConfig(batch_size=4))
    assert backend.cpu_dropout and "16-bit dropout masks" in backend.describe()
    x = random_tokens((4, MICRO.block_size), 0)
    losses = [backend.train_step(x, x, 3e-3) for _ in range(8)]
    assert losses[-1] < losses[0] - 0.5 and np.isfinite(losses).all()
    without = TorchBackend(MICRO, seed=0)  # dropout 0
    without.setup_training(TrainConfig(batch_size=4))
    assert not without.cpu_dropout
