import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import random_tokens
from lal_core.backends import make_backend
from lal_core.checkpoint import load_weights, save_weights
from lal_core.config import ModelConfig
from lal_core.errors import CheckpointError


@pytest.fixture
def saved(tmp_path, micro_cfg):
    backend = make_backend("torch", micro_cfg, seed=7)
    (tmp_path / "ckpt").mkdir()
    path = tmp_path / "ckpt" / "best.safetensors"
    save_weights(path, backend.state_dict(), micro_cfg)
    return backend, path


def test_round_trip_gives_the_same_logits(saved, micro_cfg):
    backend, path = saved
    tensors, cfg = load_weights(path)
    assert cfg == micro_cfg
    other = make_backend("torch", cfg, seed=99)
    x = random_tokens((2, 16))
    assert not np.allclose(other.logits(x), backend.logits(x))
    other.load_state_dict(tensors)
    assert np.abs(other.logits(x) - backend.logits(x)).max() < 1e-6


def test_no_temp_files_left_behind(saved):
    _, path = saved
    assert sorted(p.name for p in path.parent.iterdir()) == ["best.safetensors"]


def _one_line_error(path, expected=None) -> str:
    with pytest.raises(CheckpointError) as info:
        load_weights(path, expected)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_truncated_file(saved, tmp_path):
    _, path = saved
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "truncated" in _one_line_error(cut)


def test_garbage_file(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a checkpoint at all" * 10)
    assert "not a valid safetensors" in _one_line_error(junk)


def test_foreign_safetensors(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": np.zeros((2, 2), dtype=np.float32)}, str(foreign))
    assert "not a lal checkpoint" in _one_line_error(foreign)


def test_wrong_config(saved):
    _, path = saved
    other = ModelConfig("other", n_layer=3, n_head=2, n_embd=32, block_size=32)
    assert "not other" in _one_line_error(path, expected=other)


def test_newer_format_version(tmp_path, micro_cfg):
    state = make_backend("torch", micro_cfg).state_dict()
    path = tmp_path / "future.safetensors"
    save_file(
        state,
        str(path),
        metadata={
            "format": "lal",
            "format_version": "99",
            "model_config": json.dumps(micro_cfg.to_dict()),
        },
    )
    assert "newer" in _one_line_error(path)


def test_missing_tensor(tmp_path, micro_cfg):
    state = make_backend("torch", micro_cfg).state_dict()
    del state["ln_f.weight"]
    path = tmp_path / "partial.safetensors"
    save_weights(path, state, micro_cfg)
    assert "missing" in _one_line_error(path)


def test_failed_write_keeps_the_old_file(saved, micro_cfg):
    _, path = saved
    before = path.read_bytes()
    bad = {"wte.weight": object()}  # cannot be turned into an array: the write fails midway
    with pytest.raises((TypeError, ValueError, CheckpointError)):
        save_weights(path, bad, micro_cfg)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["best.safetensors"]
