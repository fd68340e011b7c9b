"""The run flags are defined once, from TrainConfig: every recipe field is a flag of `lal
train`, reaches the run's config, and a resume refuses the ones a run keeps."""

from dataclasses import fields

import pytest

from lal_core.cli import build_parser
from lal_core.cli.flags import fixed_by_resume, flag_name, request_argv, run_request
from lal_core.model.config import MODEL_CONFIGS
from lal_core.model.recipe import CONFIG_RECIPES, TrainConfig, default_recipe


def parse(*argv: str):
    return build_parser().parse_args(["train", *argv])


def test_every_recipe_field_is_a_flag_that_reaches_the_run():
    values = {}
    argv = []
    for i, f in enumerate(fields(TrainConfig)):
        # a valid value unlike the default: ints go up by one, floats are scaled
        value = f.default + 1 if f.type == "int" else f.default * 0.5 + (0.01 if i % 2 else 0)
        if f.name == "min_lr":
            value = 1e-5
        values[f.name] = value
        argv += [flag_name(f.name), str(value)]
    request = run_request(parse(*argv, "--dropout", "0.2", "--dtype", "float32", "--no-compile"))
    assert {f.name: getattr(request.train_config, f.name) for f in fields(TrainConfig)} == values
    assert request.model_config.dropout == 0.2
    assert request.backend_options == {"dtype": "float32", "compile": False}


def test_unset_flags_leave_the_recipe_and_the_device_defaults():
    request = run_request(parse())
    assert request.train_config == TrainConfig() and request.backend_options == {}
    assert request.model_config.name == "tiny" and request.backend == "torch"


def test_a_bad_value_is_the_configs_one_line_error():
    with pytest.raises(Exception, match="batch-size must be a positive integer") as info:
        run_request(parse("--batch-size", "0"))
    assert "\n" not in str(info.value)


def test_resume_refuses_what_the_run_keeps_and_takes_what_it_may_change():
    assert fixed_by_resume(parse("--max-iters", "9", "--device", "cpu")) == []
    given = fixed_by_resume(parse("--lr", "1e-3", "--config", "small", "--no-compile"))
    assert sorted(given) == ["--config", "--lr", "--no-compile"]
    assert fixed_by_resume(parse("--no-attn-proj-dropout")) == ["--attn-proj-dropout"]


def test_a_request_turns_back_into_the_flags_that_ask_for_it(tmp_path):
    argv = ["--config", "small", "--lr", "0.001", "--max-iters", "7", "--dropout", "0.2"]
    argv += ["--attn-proj-dropout"]
    argv += ["--no-compile", "--recompute", "--dtype", "float32", "--device", "cpu"]
    argv += ["--data", str(tmp_path / "c.txt"), "--runs-dir", str(tmp_path), "--seed", "3"]
    request = run_request(parse(*argv))
    again = run_request(parse(*request_argv(request)))
    assert again == request and request.model_config.attn_proj_dropout
    assert request_argv(run_request(parse())) == ["--config", "tiny", "--backend", "torch"]


def test_each_config_trains_with_its_own_recipe_and_the_writeups_is_one_flag_away():
    assert CONFIG_RECIPES, "no config has a recipe of its own: drop this test"
    for name in CONFIG_RECIPES:
        own = run_request(parse("--config", name))
        assert own.train_config == default_recipe(name) != TrainConfig()
        assert own.model_config == MODEL_CONFIGS[name]
        # The dashboard starts it with no recipe flag; a value equal to another config's
        # default is given.
        assert request_argv(own) == ["--config", name, "--backend", "torch"]
        plain = run_request(parse("--config", name, "--max-iters", "5000"))
        assert run_request(parse(*request_argv(plain))) == plain
        # --writeup: the write-up's recipe, no dropout; a flag beside it still counts.
        writeup = run_request(parse("--config", name, "--writeup", "--seed", "3"))
        assert writeup.train_config == TrainConfig(seed=3)
        assert writeup.model_config.dropout == 0.0 and not writeup.model_config.attn_proj_dropout
        assert run_request(parse(*request_argv(writeup))) == writeup
    given = run_request(parse("--writeup", "--dropout", "0.1"))
    assert given.model_config.dropout == 0.1
    assert fixed_by_resume(parse("--writeup")) == ["--writeup"]
