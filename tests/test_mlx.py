"""The MLX backend against the PyTorch one: the same weights give the same numbers.

Micro shapes only. The Linux MLX CPU wheel links a reference BLAS (a few GFLOP/s, one thread)
and the 50,257-wide output head dominates, so every model here has 1-2 layers, a handful of
positions and batch 1-2. Training runs of both backends live in test_training.py, parametrised.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from conftest import EACH_CONTROL, random_tokens
from lal_core import backends
from lal_core.backends import make_backend
from lal_core.cli import main
from lal_core.errors import ConfigError, DeviceError
from lal_core.generation.controls import Controls
from lal_core.generation.sampling import Generation, generate_ids, load_for_sampling, stream
from lal_core.model.config import MODEL_CONFIGS, ModelConfig
from lal_core.model.recipe import TrainConfig
from lal_core.runs import events as ev
from lal_core.runs.checkpoints import load_weights, save_weights
from lal_core.runs.folder import runs_root
from lal_core.training.request import RunRequest
from lal_core.training.train import Trainer, train

# Every config's layer shape (width, heads), one layer deep, eight positions: what parity needs.
# The wide ones with a 2,048-token vocabulary: the layers are what differ between configs, and
# a 50,257-row embedding of width 768 takes seconds to build on MLX's CPU wheel (tiny keeps it).
SHAPES = [
    replace(cfg, n_layer=1, block_size=8, vocab_size=2048 if cfg.n_embd > 128 else cfg.vocab_size)
    for cfg in MODEL_CONFIGS.values()
]
# Two layers with biases and dropout (inactive in eval): the optional parts of the model.
SHAPES.append(ModelConfig("bias", 2, 2, 32, block_size=8, bias=True, dropout=0.2))
SHORT = ModelConfig("short", n_layer=2, n_head=2, n_embd=32, block_size=16)


def random_state(template: dict[str, np.ndarray], seed: int = 0, gain: float = 1.0):
    """Weights of unit-scale activations from a fresh model's (std 0.02) ones: matrices rescaled
    to std gain/sqrt(fan_in), LayerNorm gains and biases spread around 1 and 0."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, v in template.items():
        if v.ndim > 1:
            out[name] = v * np.float32(gain / np.sqrt(v.shape[-1]) / v.std())
        else:
            noise = rng.standard_normal(v.shape, dtype=np.float32) * np.float32(0.1)
            out[name] = noise + np.float32(name.endswith(".weight"))
    return out


def torch_fp32(cfg: ModelConfig, seed: int = 0):
    """A torch backend in plain float32 throughout (no autocast, no 16-bit sampling copy, where
    the defaults would pick them on this CPU), eager: the reference for parity."""
    return make_backend(
        "torch", cfg, seed=seed, dtype="float32", infer_dtype="float32", compile=False
    )


def twins(cfg: ModelConfig, **kwargs):
    """A torch and an MLX backend holding the same random weights."""
    t = torch_fp32(cfg)
    state = random_state(t.state_dict(), **kwargs)
    t.load_state_dict(state)
    m = make_backend("mlx", cfg, seed=0)
    m.load_state_dict(state)
    return t, m


def reference_loss(logits: np.ndarray, y: np.ndarray, smoothing: float = 0.0) -> float:
    """Mean cross-entropy over the positions whose target is not -1, in float64 numpy; with
    `smoothing`, against the target (1 - smoothing) onehot + smoothing / V."""
    logits = logits.astype(np.float64).reshape(-1, logits.shape[-1])
    y = y.reshape(-1)
    keep = y != -1
    z = logits[keep]
    logz = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    target = z[np.arange(len(z)), y[keep]]
    return float(((logz - target) + smoothing * (target - z.mean(-1))).mean())


# -- parity --------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", SHAPES, ids=lambda c: f"{c.name}-{c.n_embd}x{c.n_head}")
def test_same_logits_and_loss(cfg):
    t, m = twins(cfg)
    shape = (2 if cfg.n_embd < 128 else 1, cfg.block_size)  # the wide ones: one row suffices
    x = random_tokens(shape, seed=1) % cfg.vocab_size
    a, b = t.logits(x), m.logits(x)
    assert a.shape == b.shape == (*shape, cfg.vocab_size) and b.dtype == np.float32
    assert a.std() > 0.3  # logits of a size where a mismatch would show
    assert np.abs(a - b).max() < 1e-4

    # The same loss on the same batch, with ignored (-1) targets as in SFT.
    y = random_tokens(shape, seed=2) % cfg.vocab_size
    y[0, :3] = -1
    y[-1, -2:] = -1
    want = reference_loss(a, y)
    torch_loss, mlx_loss = t.eval_loss(x, y), m.eval_loss(x, y)
    assert torch_loss == pytest.approx(want, abs=1e-4)
    assert abs(mlx_loss - torch_loss) < 1e-5
    assert abs(want - reference_loss(a, np.where(y == -1, 0, y))) > 1e-3  # the -1s mattered


def test_parameter_names_and_counts_match_torch(micro_cfg):
    t, m = make_backend("torch", micro_cfg), make_backend("mlx", micro_cfg)
    ts, ms = t.state_dict(), m.state_dict()
    assert {k: v.shape for k, v in ms.items()} == {k: v.shape for k, v in ts.items()}
    assert all(v.dtype == np.float32 for v in ms.values())
    assert m.num_parameters() == t.num_parameters()
    # The same init recipe: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layer),
    # LayerNorm gains 1.
    assert ms["wte.weight"].std() == pytest.approx(0.02, rel=0.02)
    assert ms["blocks.0.attn.c_attn.weight"].std() == pytest.approx(0.02, rel=0.05)
    assert ms["blocks.1.mlp.c_proj.weight"].std() == pytest.approx(0.01, rel=0.05)
    assert (ms["ln_f.weight"] == 1).all()
    # A fresh model guesses uniformly, as the torch one does: loss near ln(V).
    x, y = random_tokens((2, 8), seed=3), random_tokens((2, 8), seed=4)
    assert m.eval_loss(x, y) == pytest.approx(np.log(micro_cfg.vocab_size), abs=0.1)


@pytest.mark.parametrize("name", ["torch", "mlx"])
def test_label_smoothing_changes_the_training_loss_and_not_the_evals(name):
    cfg = replace(SHORT, block_size=8)
    state = random_state(torch_fp32(cfg).state_dict(), seed=3)
    x, y = random_tokens((2, 8), seed=50), random_tokens((2, 8), seed=51)
    y[0, :2] = -1  # ignored, as SFT's prompt tokens are
    losses = []
    for smoothing in (0.0, 0.1):
        b = torch_fp32(cfg) if name == "torch" else make_backend("mlx", cfg)
        b.load_state_dict(state)
        b.setup_training(TrainConfig(label_smoothing=smoothing))
        logits, evaluated = b.logits(x), b.eval_loss(x, y)
        assert evaluated == pytest.approx(reference_loss(logits, y), abs=1e-4)  # never smoothed
        trained = b.train_step(x, y, 0.0)  # lr 0: the loss of these weights
        assert trained == pytest.approx(reference_loss(logits, y, smoothing), abs=1e-4)
        losses.append(trained)
    assert abs(losses[1] - losses[0]) > 1e-2  # the smoothing made a difference


def test_smoothed_gradients_match_torch():
    # The step itself is test_train_steps_match_torch's; smoothed, the gradients must agree.
    # (Not two steps: smoothing gives every token's embedding row a gradient, many of them near
    # zero, where Adam's m / sqrt(v) turns the frameworks' last bits into visible steps.)
    cfg = replace(SHORT, block_size=8)
    t, m = twins(cfg, gain=1.0)
    for b in (t, m):
        b.setup_training(TrainConfig(label_smoothing=0.1))
    x, y = random_tokens((2, 8), seed=60), random_tokens((2, 8), seed=61)
    y[1, :3] = -1
    gt, gm = t.gradients(x, y), m.gradients(x, y)
    plain = torch_fp32(cfg)
    plain.load_state_dict(t.state_dict())
    plain.setup_training(TrainConfig())
    unsmoothed = plain.gradients(x, y)["wte.weight"]
    for name in gt:
        assert np.linalg.norm(gm[name] - gt[name]) < 1e-4 * np.linalg.norm(gt[name]), name
    # Smoothing moves the embedding's gradient by more than that tolerance, many times over.
    assert np.linalg.norm(unsmoothed - gt["wte.weight"]) > 1e-2 * np.linalg.norm(unsmoothed)


def test_train_steps_match_torch(micro_cfg):
    """Two AdamW steps from the same weights on the same batches: the same weights and moments.

    Checks bias correction, weight decay on matrices only, and clipping: the gradients are
    far above norm 1 at this scale, so unclipped first moments would differ many times over.
    """
    cfg = replace(micro_cfg, block_size=16)
    t, m = twins(cfg, gain=1.0)
    start = t.state_dict()
    train_cfg = TrainConfig(weight_decay=0.5)
    t.setup_training(train_cfg)
    m.setup_training(train_cfg)
    lrs = [1e-2, 3e-3]
    for i, lr in enumerate(lrs):
        x = random_tokens((2, 16), seed=10 + i)
        y = random_tokens((2, 16), seed=20 + i)
        y[1, :4] = -1
        assert m.train_step(x, y, lr) == pytest.approx(t.train_step(x, y, lr), abs=1e-4)
    ts, ms = t.state_dict(), m.state_dict()
    for name in ts:
        moved_t, moved_m = ts[name] - start[name], ms[name] - start[name]
        assert np.abs(moved_t).max() > 5e-3  # the steps moved every tensor, well past the tolerance
        # Adam's update is m / sqrt(v): for the rare weight whose gradient is at rounding level,
        # the two frameworks' last bits may tip it, so a few outliers are allowed.
        assert np.quantile(np.abs(moved_m - moved_t), 0.999) < 1e-4, name
        assert np.linalg.norm(moved_m - moved_t) < 1e-2 * np.linalg.norm(moved_t), name

    # The optimizer states agree, in the same layout: the step and both moments per weight.
    # The first moment is a sum of clipped gradients, so it checks the clipping directly.
    t_opt, m_opt = t.optimizer_state(), m.optimizer_state()
    assert set(m_opt) == set(t_opt) - {"rng.torch"}
    assert m_opt["step"].shape == t_opt["step"].shape and m_opt["step"][0] == len(lrs)
    for name in ts:
        m1, v1 = t_opt[f"m.{name}"], t_opt[f"v.{name}"]
        assert np.abs(m_opt[f"m.{name}"] - m1).max() <= 1e-5 + 1e-3 * np.abs(m1).max(), name
        assert np.abs(m_opt[f"v.{name}"] - v1).max() <= 1e-3 * v1.max(), name


def test_optimizer_state_round_trip_resumes_exactly(micro_cfg):
    cfg = replace(micro_cfg, block_size=8)
    a = make_backend("mlx", cfg, seed=5)
    a.setup_training(TrainConfig())
    batches = [
        (random_tokens((2, 8), seed=30 + i), random_tokens((2, 8), seed=40 + i)) for i in range(3)
    ]
    for x, y in batches[:2]:
        a.train_step(x, y, 1e-3)
    b = make_backend("mlx", cfg, seed=6)
    b.setup_training(TrainConfig())
    b.load_state_dict(a.state_dict())
    b.load_optimizer_state(a.optimizer_state())
    x, y = batches[2]
    assert b.train_step(x, y, 1e-3) == a.train_step(x, y, 1e-3)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert b.optimizer_state()["step"][0] == 3


@pytest.mark.slow
def test_stopped_and_resumed_run_ends_bit_identical(micro_cfg, shakespeare, tmp_path):
    """The shared loop's exact resume, on MLX: weights, AdamW moments and step count, and the
    dropout masks (drawn from the seed and the step count) all carry over."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(shakespeare.read_text()[:6_000])
    model_cfg = replace(micro_cfg, dropout=0.1)
    cfg = TrainConfig(max_iters=6, eval_interval=3, batch_size=2, lr=2e-3, warmup_iters=2)
    cfg = replace(cfg, eval_samples=1, eval_sample_tokens=8)  # MLX's CPU wheel samples slowly
    straight = train(RunRequest(model_cfg, cfg, backend="mlx", data=corpus))

    stop = ev.StopRequest()

    def stop_at_4(event):
        if isinstance(event, ev.StepDone) and event.iteration == 4:
            stop.set("test")

    first = Trainer(
        RunRequest(model_cfg, cfg, backend="mlx", data=corpus), on_event=stop_at_4, stop=stop
    )
    assert first.run_training().status == "stopped"
    resumed = Trainer.resume(first.run.path).run_training()
    assert resumed.status == "completed" and resumed.iteration == cfg.max_iters
    a, _ = load_weights(straight.run_dir / "final.safetensors")
    b, _ = load_weights(resumed.run_dir / "final.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert resumed.best_val == straight.best_val


def test_non_finite_gradient_skips_the_update(micro_cfg):
    cfg = replace(micro_cfg, block_size=8)
    m = make_backend("mlx", cfg, seed=0)
    m.setup_training(TrainConfig())
    sane = m.state_dict()
    x, y = random_tokens((2, 8), seed=1), random_tokens((2, 8), seed=2)
    m.train_step(x, y, 1e-3)
    after_one = m.state_dict()
    m.load_state_dict({**after_one, "wte.weight": after_one["wte.weight"] * 1e37})  # overflows
    poisoned = m.state_dict()
    assert np.isnan(m.train_step(x, y, 1e-3))
    assert all(np.array_equal(m.state_dict()[k], poisoned[k]) for k in poisoned)  # untouched
    assert m.optimizer_state()["step"][0] == 1
    m.load_state_dict(after_one)  # and training goes on from sane weights
    assert np.isfinite(m.train_step(x, y, 1e-3))
    assert m.optimizer_state()["step"][0] == 2
    assert not np.array_equal(m.state_dict()["wte.weight"], sane["wte.weight"])


def test_dropout_is_active_in_training_only():
    cfg = ModelConfig("drop", n_layer=1, n_head=2, n_embd=32, block_size=8, dropout=0.5)
    m = make_backend("mlx", cfg, seed=0)
    m.load_state_dict(random_state(m.state_dict(), gain=3.0))
    x, y = random_tokens((2, 8), seed=1), random_tokens((2, 8), seed=2)
    assert m.eval_loss(x, y) == m.eval_loss(x, y)  # eval: deterministic
    m.model.train()
    losses = {m.model(m._tokens(x), m._tokens(y))[1].item() for _ in range(3)}
    assert len(losses) == 3  # training: a fresh dropout mask each call


# -- generation ----------------------------------------------------------------------------
@pytest.fixture
def decisive_checkpoint(tmp_path):
    """A torch model with large random weights (greedy choices far from ties), saved."""
    t = make_backend("torch", SHORT, seed=0)
    rng = np.random.default_rng(0)
    t.load_state_dict(
        {
            k: (rng.standard_normal(v.shape) * (0.3 if v.ndim > 1 else 0.1) + (v.ndim == 1)).astype(
                np.float32
            )
            for k, v in t.state_dict().items()
        }
    )
    path = tmp_path / "decisive.safetensors"
    save_weights(path, t.state_dict(), SHORT)
    return path


def test_greedy_generation_matches_torch(decisive_checkpoint):
    t = torch_fp32(SHORT)
    t.load_state_dict(load_weights(decisive_checkpoint)[0])
    m = load_for_sampling(decisive_checkpoint, "mlx")
    prompt = random_tokens((5,), seed=1).tolist()
    n = 50  # well past block_size = 16: the window slides and the cache is dropped
    want = [tok for tok, _ in generate_ids(t, prompt, n, temperature=0)]
    got = list(generate_ids(m, prompt, n, temperature=0))
    assert [tok for tok, _ in got] == want
    assert len(set(want)) > 3  # not a degenerate constant stream
    assert all(0 < p <= 1 for _, p in got)
    uncached = [tok for tok, _ in generate_ids(m, prompt, 20, temperature=0, use_cache=False)]
    assert uncached == want[:20]


def test_sampling_options(decisive_checkpoint):
    m = load_for_sampling(decisive_checkpoint, "mlx")
    prompt = random_tokens((5,), seed=2).tolist()
    a = list(generate_ids(m, prompt, 12, temperature=1.5, top_k=5, seed=3))
    b = list(generate_ids(m, prompt, 12, temperature=1.5, top_k=5, seed=3))
    c = list(generate_ids(m, prompt, 12, temperature=1.5, top_k=5, seed=4))
    assert a == b and a != c
    # top_k=1 is greedy whatever the temperature.
    top1 = [t for t, _ in generate_ids(m, prompt, 8, temperature=2.0, top_k=1, seed=5)]
    assert top1 == [t for t, _ in generate_ids(m, prompt, 8, temperature=0)]
    # Draws stay within the top k, with their probability under the renormalised top k.
    logits = m.logits(np.array([prompt]))[0, -1].astype(np.float64) / 1.5
    top = np.argsort(logits)[-5:]
    probs = np.exp(logits[top] - logits[top].max())
    probs /= probs.sum()
    drawn = [next(generate_ids(m, prompt, 1, temperature=1.5, top_k=5, seed=s)) for s in range(30)]
    assert {t for t, _ in drawn} <= set(top.tolist()) and len({t for t, _ in drawn}) > 1
    for token, p in drawn:
        assert p == pytest.approx(probs[top.tolist().index(token)], abs=1e-5)


@EACH_CONTROL
def test_batches_and_controls_draw_as_alone_and_as_torch(decisive_checkpoint, controls):
    t = torch_fp32(SHORT)
    t.load_state_dict(load_weights(decisive_checkpoint)[0])
    m = load_for_sampling(decisive_checkpoint, "mlx")
    prompt = random_tokens((5,), seed=4).tolist()
    together = Generation(m, prompt, 30, controls, 3, seed=21).run()
    alone = [Generation(m, prompt, 30, controls, 1, 21 + i).run()[0].tokens for i in range(3)]
    assert [s.tokens for s in together] == alone
    # The draw is numpy's, seeded per row: the same seed draws the same on both backends.
    assert [s.tokens for s in Generation(t, prompt, 30, controls, 3, seed=21).run()] == alone


def test_the_repetition_penalty_on_mlx_lowers_seen_tokens_only(decisive_checkpoint):
    m = load_for_sampling(decisive_checkpoint, "mlx")
    context = random_tokens((8,), seed=5)
    dist = []
    for penalty in (1.0, 1.5):
        m.start_generation(1)
        m.see(context[None])
        c = m.candidates(m.prefill(context[None]), None, penalty, False)
        dist.append(np.exp(c.logits[0]) / np.exp(c.logits[0]).sum())
    seen = np.isin(np.arange(SHORT.vocab_size), context)
    assert (dist[1][seen] < dist[0][seen]).all() and (dist[1][~seen] >= dist[0][~seen]).all()


# -- checkpoints across backends -----------------------------------------------------------
def test_checkpoints_cross_between_backends(tmp_path, micro_cfg):
    x = random_tokens((1, 8), seed=7)
    for src, dst in (("mlx", "torch"), ("torch", "mlx")):
        writer = make_backend(src, micro_cfg, seed=11)
        path = tmp_path / f"{src}.safetensors"
        save_weights(path, writer.state_dict(), micro_cfg)
        tensors, cfg = load_weights(path)
        reader = make_backend(dst, cfg, seed=12)
        assert np.abs(reader.logits(x) - writer.logits(x)).max() > 1e-3  # different before
        reader.load_state_dict(tensors)
        assert np.abs(reader.logits(x) - writer.logits(x)).max() < 1e-5


def test_cli_samples_a_torch_run_with_mlx(micro_cfg, shakespeare, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(shakespeare.read_text()[:10_000])
    cfg = TrainConfig(max_iters=8, eval_interval=8, batch_size=4, lr=3e-3, warmup_iters=2)
    cfg = replace(cfg, eval_samples=1, eval_sample_tokens=8)
    result = train(RunRequest(micro_cfg, cfg, backend="torch", data=corpus))
    capsys.readouterr()
    args = ["sample", result.run_dir.name, "--backend", "mlx", "--prompt", "ROMEO:"]
    assert main([*args, "--temperature", "0", "--tokens", "15"]) == 0
    out = capsys.readouterr().out
    # The same greedy text as PyTorch draws from the same checkpoint.
    t = torch_fp32(micro_cfg)
    t.load_state_dict(load_weights(result.run_dir / "best.safetensors")[0])
    want = "".join(p.text for p in stream(t, "ROMEO:", 15, Controls(temperature=0)))
    assert out == "ROMEO:" + want + "\n"
    # Sampling: seeded, so the same text twice, and more than the prompt.
    texts = []
    for _ in range(2):
        assert main([*args, "--temperature", "1", "--seed", "3", "--tokens", "15"]) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] and texts[0].strip() != "ROMEO:"


# -- errors a user can cause ---------------------------------------------------------------
def test_missing_mlx_says_how_to_install(monkeypatch, capsys, tmp_path, micro_cfg, small_corpus):
    monkeypatch.setattr(backends, "mlx_available", lambda: False)
    path = tmp_path / "m.safetensors"
    save_weights(path, make_backend("torch", micro_cfg).state_dict(), micro_cfg)
    train_args = ["train", "--backend", "mlx", "--data", str(small_corpus)]
    for args in (["sample", str(path), "--backend", "mlx"], train_args):
        assert main(args) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "uv sync --extra mlx" in err, err


def test_devices(micro_cfg):
    assert make_backend("mlx", micro_cfg, device="cpu").device == "cpu"
    assert make_backend("mlx", micro_cfg, device="auto").device in ("cpu", "gpu")
    with pytest.raises(DeviceError, match="choose one of: auto, cpu, gpu") as info:
        make_backend("mlx", micro_cfg, device="cuda")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "flags, options",
    [(["--dtype", "float16"], {"dtype": "float16"}), (["--recompute"], {"recompute": True})],
)
def test_an_option_mlx_cannot_honour_is_a_one_line_error(flags, options, small_corpus, capsys):
    # It used to be dropped without a word: --backend mlx --dtype float16 trained in float32.
    option = flags[0]
    with pytest.raises(ConfigError, match=f"{option} does not apply to the mlx backend"):
        make_backend("mlx", SHORT, **options)
    code = main(["train", "--backend", "mlx", "--data", str(small_corpus), *flags])
    err = capsys.readouterr().err
    assert code == 1 and f"{option} does not apply to the mlx backend" in err
    assert err.count("\n") == 1 and not list(runs_root().glob("*"))
    assert make_backend("mlx", SHORT, compile=False).compile is False  # one it has: honoured


def test_no_int8_head_is_refused_for_mlx(decisive_checkpoint, capsys):
    code = main(["sample", str(decisive_checkpoint), "--backend", "mlx", "--no-int8-head"])
    err = capsys.readouterr().err
    assert code == 1 and "--no-int8-head does not apply to the mlx backend" in err
