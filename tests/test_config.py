import pytest

from lal_core.errors import ConfigError
from lal_core.model.config import (
    CONFIG_DROPOUT,
    MODEL_CONFIGS,
    ModelConfig,
    count_parameters,
    get_model_config,
)
from lal_core.model.gpt import GPT
from lal_core.model.recipe import TrainConfig


@pytest.mark.parametrize(
    "name, millions", [("tiny", 7.2), ("small", 30.0), ("medium", 51.2), ("lal", 123.9)]
)
def test_parameter_counts(name, millions):
    assert round(count_parameters(get_model_config(name)) / 1e6, 1) == millions


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_counted_parameters_match_the_model(name):
    cfg = get_model_config(name)
    model = GPT(cfg)
    # Weight tying: the head shares wte's storage, so it is counted once.
    assert sum(p.numel() for p in model.parameters()) == count_parameters(cfg)


def test_defaults_follow_the_recipe():
    cfg = TrainConfig()
    assert (cfg.lr, cfg.beta1, cfg.beta2, cfg.weight_decay) == (3e-4, 0.9, 0.95, 0.1)
    assert (cfg.warmup_iters, cfg.max_iters, cfg.evals_every, cfg.patience) == (100, 5000, 250, 4)
    assert cfg.grad_clip == 1.0
    assert cfg.label_smoothing == 0.0  # the write-up's plain cross-entropy
    # A run.json from before label smoothing trained without it, and resumes so.
    assert TrainConfig.from_dict({"batch_size": 16}).label_smoothing == 0.0


def test_default_eval_cadence_is_kept_in_sequences():
    # The recipe's 250 steps at batch 16: the same 4,000 sequences between evals at any batch.
    assert [TrainConfig(batch_size=b).evals_every for b in (16, 2, 32, 1)] == [250, 2000, 125, 4000]
    assert TrainConfig(batch_size=2, eval_interval=5).evals_every == 5  # given: as it is
    # A run.json from before eval_tokens scored its whole val split, and still does.
    assert TrainConfig.from_dict({"batch_size": 16}).eval_tokens == 0
    assert TrainConfig().eval_tokens == 40_000


def test_eval_batch_holds_at_least_the_micro_batch_and_2048_tokens():
    from lal_core.model.recipe import eval_batch_size

    tiny, lal = get_model_config("tiny"), get_model_config("lal")
    assert eval_batch_size(tiny, 2) == 16 and eval_batch_size(lal, 2) == 4
    assert eval_batch_size(tiny, 32) == 32


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("batch_size", 0, "batch-size"),
        ("lr", -1e-3, "lr"),
        ("lr", 0.0, "lr"),
        ("patience", 0, "patience"),
        ("eval_interval", -1, "eval-interval"),
        ("eval_tokens", -1, "eval-tokens"),
        ("max_iters", -5, "max-iters"),
        ("label_smoothing", 1.0, "label-smoothing"),
        ("label_smoothing", -0.1, "label-smoothing"),
    ],
)
def test_invalid_training_values(field, value, words):
    with pytest.raises(ConfigError, match=words):
        TrainConfig(**{field: value}).validate()


def test_unknown_config_name_lists_the_choices():
    with pytest.raises(ConfigError, match="tiny, small, medium, lal"):
        get_model_config("huge")


def test_heads_must_divide_width():
    with pytest.raises(ConfigError, match="divisible"):
        ModelConfig("odd", n_layer=1, n_head=3, n_embd=128, block_size=8).validate()


def test_named_configs_train_with_dropout_and_the_spec_regime_is_one_flag_away():
    assert {name: c.dropout for name, c in MODEL_CONFIGS.items()} == CONFIG_DROPOUT
    assert all(rate > 0 for rate in CONFIG_DROPOUT.values())
    assert get_model_config("tiny", dropout=0.0).dropout == 0.0
    assert ModelConfig("mine", n_layer=1, n_head=1, n_embd=8, block_size=8).dropout == 0.0


def test_dropout_on_the_attention_projection_is_off_unless_asked_and_old_configs_load_so():
    tiny = get_model_config("tiny")
    assert not tiny.attn_proj_dropout
    old = {k: v for k, v in tiny.to_dict().items() if k != "attn_proj_dropout"}  # run.json before
    assert ModelConfig.from_dict(old) == tiny
    asked = get_model_config("tiny", attn_proj_dropout=True)
    assert ModelConfig.from_dict(asked.to_dict()) == asked


def test_dropout_range():
    with pytest.raises(ConfigError, match="dropout"):
        get_model_config("tiny", dropout=1.0)
    assert set(MODEL_CONFIGS) == {"tiny", "small", "medium", "lal"}
