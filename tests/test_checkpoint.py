import errno
import json
import stat
from pathlib import Path

import numpy as np
import pytest
from safetensors import SafetensorError
from safetensors.numpy import save_file

from conftest import random_tokens
from lal_core.backends import make_backend
from lal_core.errors import CheckpointError
from lal_core.model.config import ModelConfig
from lal_core.model.recipe import TrainConfig
from lal_core.runs import checkpoints, files
from lal_core.runs.checkpoints import STATE_FILE, load_state, load_weights, save_state, save_weights


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


def _saver(kind: str, backend, cfg):
    """A function that writes `kind` (a weights checkpoint or a training-state file) to a path."""
    if kind == "weights":
        return lambda path: save_weights(path, backend.state_dict(), cfg, {"iteration": 3})
    backend.setup_training(TrainConfig(batch_size=2))
    x, y = random_tokens((2, 16), seed=1), random_tokens((2, 16), seed=2)
    backend.train_step(x, y, 1e-3)  # so the optimizer has moments to save
    return lambda path: save_state(
        path, backend.state_dict(), backend.optimizer_state(), cfg, {"iteration": 1}
    )


def _partial_write(tensors, filename, metadata=None):
    """safetensors' save_file that writes part of the file, then finds the disk full."""
    with open(filename, "wb") as f:
        f.write(b"\x00" * 1000)
    raise OSError(errno.ENOSPC, "No space left on device")


def _failing_fsync(fd):
    raise OSError(errno.EIO, "Input/output error")


def _safetensors_disk_full(tensors, filename, metadata=None):
    """What safetensors (0.8) raises on a really full disk (checked on a 200 kB tmpfs): its own
    error type, not an OSError."""
    Path(filename).write_bytes(b"\x00" * 1000)
    raise SafetensorError(
        "Error while serializing: I/O error: No space left on device (os error 28)"
    )


FAILURES = {
    "write": ("save_file", _partial_write, "No space left on device"),
    "fsync": ("fsync", _failing_fsync, "Input/output error"),
    "safetensors error": ("save_file", _safetensors_disk_full, "No space left on device"),
}


@pytest.mark.parametrize("previous", [True, False], ids=["over an old file", "new file"])
@pytest.mark.parametrize("kind", ["weights", "state"])
@pytest.mark.parametrize(
    "failure",
    [
        "write",
        "fsync",
        "safetensors error",
    ],
)
def test_failed_write_keeps_the_old_file(failure, kind, previous, tmp_path, micro_cfg, monkeypatch):
    backend = make_backend("torch", micro_cfg, seed=7)
    save = _saver(kind, backend, micro_cfg)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    path = folder / ("best.safetensors" if kind == "weights" else STATE_FILE)
    if previous:
        save(path)
        before = path.read_bytes()
        backend.load_state_dict({k: v + 1 for k, v in backend.state_dict().items()})  # new bytes

    name, replacement, reason = FAILURES[failure]
    calls = []

    def failing(*args, **kwargs):
        calls.append(args)
        return replacement(*args, **kwargs)

    monkeypatch.setattr(checkpoints if name == "save_file" else files.os, name, failing)
    with pytest.raises(CheckpointError) as info:
        save(path)
    monkeypatch.undo()

    assert calls, "the failure was never reached: the write took another path"
    message = str(info.value)
    assert "\n" not in message and str(path) in message and reason in message
    assert "None" not in message  # the reason is the OS's words, not a missing strerror
    if previous:
        assert path.read_bytes() == before
        if kind == "weights":
            load_weights(path, micro_cfg)
        else:
            load_state(path, micro_cfg)
        assert [p.name for p in folder.iterdir()] == [path.name]  # no temp file left
    else:
        assert list(folder.iterdir()) == []  # nothing appears, not even a temp file


def test_checkpoint_gets_normal_permissions(saved):
    _, path = saved
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~files._UMASK
