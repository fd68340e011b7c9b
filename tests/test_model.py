import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import random_tokens
from lal_core.backends import make_backend
from lal_core.backends.torch.training_loss import TrainingLoss
from lal_core.model.config import ModelConfig, get_model_config
from lal_core.model.gpt import GPT


def test_untrained_loss_is_uniform_guessing():
    torch.manual_seed(0)
    model = GPT(get_model_config("tiny")).eval()
    x = torch.from_numpy(random_tokens((4, 128), seed=1))
    y = torch.from_numpy(random_tokens((4, 128), seed=2))
    with torch.no_grad():
        _, loss = model(x, y)
    assert abs(loss.item() - math.log(50257)) < 0.15


def test_causal_a_later_token_does_not_change_earlier_logits(micro_cfg):
    model = GPT(micro_cfg).eval()
    x = torch.from_numpy(random_tokens((1, 16)))
    x2 = x.clone()
    x2[0, 10] = (x2[0, 10] + 1) % 50257
    with torch.no_grad():
        a, _ = model(x)
        b, _ = model(x2)
    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-6)
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_ignored_targets_count_for_nothing(micro_cfg):
    torch.manual_seed(0)
    model = GPT(micro_cfg)
    x = torch.from_numpy(random_tokens((2, 16), seed=3))
    y = torch.from_numpy(random_tokens((2, 16), seed=4))
    ignored = torch.zeros_like(y, dtype=torch.bool)
    ignored[:, :7] = True
    y_masked = y.masked_fill(ignored, -1)

    _, loss = model(x, y_masked)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    # The same loss computed by hand over the counted positions only.
    logits, _ = model(x)
    by_hand = F.cross_entropy(logits[~ignored], y[~ignored])
    by_hand.backward()
    assert loss.item() == pytest.approx(by_hand.item(), abs=1e-6)
    for g, p in zip(grads, model.parameters(), strict=True):
        assert torch.allclose(g, p.grad, atol=1e-7)

    # Nothing flows back from an ignored position: the final hidden state there gets no
    # gradient, under forward()'s plain loss and under the backend's chunked one.
    hidden = []

    def keep(module, args, out):
        out.retain_grad()
        hidden.append(out)

    for loss_fn in (lambda m, a, b: m(a, b)[1], TrainingLoss(chunked=True, recompute=False)):
        hidden.clear()
        hook = model.ln_f.register_forward_hook(keep)
        loss_fn(model, x, y_masked).backward()
        hook.remove()
        grad = hidden[0].grad  # (B, T, C)
        assert torch.all(grad[ignored] == 0)
        assert torch.all(grad[~ignored].abs().sum(-1) > 0)


def test_backend_state_dict_has_canonical_names(micro_cfg):
    from lal_core.runs.checkpoints import expected_shapes

    state = make_backend("torch", micro_cfg).state_dict()
    assert {k: v.shape for k, v in state.items()} == expected_shapes(micro_cfg)
    assert all(v.dtype == np.float32 for v in state.values())


@pytest.mark.parametrize("backend", ["torch", "mlx"])
@pytest.mark.parametrize("on", [False, True], ids=["off", "attn-proj-dropout"])
def test_attention_output_is_dropped_only_where_the_config_asks(backend, on):
    # With dropout 0.5 on the projection, about half the attention's outputs are exactly 0
    # while training, none in eval; off, only a few in training (a first position whose one
    # attention weight is dropped in both heads), none in eval.
    if backend == "mlx":
        pytest.importorskip("mlx.core")
    cfg = ModelConfig("drop", n_layer=1, n_head=2, n_embd=32, block_size=8, dropout=0.5)
    cfg = replace(cfg, attn_proj_dropout=on)
    x = np.random.default_rng(0).standard_normal((4, 8, 32)).astype(np.float32)
    zeros = []
    for training in (True, False):
        if backend == "torch":
            attn = GPT(cfg).blocks[0].attn.train(training)
            y = attn(torch.from_numpy(x)).detach().numpy()
        else:
            import mlx.core as mx

            from lal_core.model.gpt_mlx import GPT as MLXGPT

            attn = MLXGPT(cfg).blocks[0].attn
            attn.train(training)
            y = np.array(attn(mx.array(x)))
        zeros.append(float((y == 0).mean()))
    assert zeros[1] == 0.0
    assert (0.4 < zeros[0] < 0.65) if on else zeros[0] < 0.1
