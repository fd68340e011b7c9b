"""Every bad input: one line on stderr naming the problem, a non-zero exit, no traceback, and
no file created or changed."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from conftest import MICRO, assert_one_line_error, call_main
from lal_core import cli
from lal_core.backends import make_backend
from lal_core.model.config import ModelConfig
from lal_core.model.recipe import TrainConfig
from lal_core.runs.checkpoints import save_weights


def tree(*roots: Path) -> dict[str, str]:
    """Every file under the roots with the sha256 of its bytes."""
    out = {}
    for root in roots:
        for p in root.rglob("*"):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def files(isolated_home, short_corpus, tmp_path):
    """A home with one valid run (micro model) and a folder of bad inputs."""
    run = isolated_home / "checkpoints" / "good"
    run.mkdir(parents=True)
    state = make_backend("torch", MICRO, seed=0).state_dict()
    save_weights(run / "best.safetensors", state, MICRO)
    info = {
        "model_config": MICRO.to_dict(),
        "train_config": TrainConfig().to_dict(),
        "data": {"path": str(short_corpus)},
        "status": "stopped",
        "created": 1.0,
    }
    (run / "run.json").write_text(json.dumps(info))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.txt").write_text("")
    (bad / "binary.txt").write_bytes(b"\x00\x01\x02\x03" * 100)
    (bad / "latin1.txt").write_bytes("Ça va très bien, merci. ".encode("latin-1") * 50)
    (bad / "short.txt").write_text("To be, or not to be.\n" * 30)
    good = (run / "best.safetensors").read_bytes()
    (bad / "truncated.safetensors").write_bytes(good[: len(good) // 3])
    (bad / "notsafetensors.safetensors").write_text("hello, I am a text file")
    meta = {"format": "lal", "format_version": "7", "model_config": json.dumps(MICRO.to_dict())}
    save_file(state, str(bad / "newer.safetensors"), metadata=meta)
    fewer = dict(state)
    del fewer["ln_f.weight"]
    save_weights(bad / "missing.safetensors", fewer, MICRO)
    save_weights(bad / "extra.safetensors", {**state, "lm_head.weight": state["wte.weight"]}, MICRO)
    # A run whose checkpoint is for another model than its run.json says.
    other = isolated_home / "checkpoints" / "mismatch"
    other.mkdir()
    save_weights(other / "best.safetensors", state, MICRO)
    wider = ModelConfig("wider", n_layer=2, n_head=2, n_embd=64, block_size=32)
    (other / "run.json").write_text(json.dumps({"model_config": wider.to_dict(), "created": 2.0}))
    (bad / "norunjson").mkdir()
    return {"home": isolated_home, "bad": bad, "corpus": short_corpus, "run": run}


# case: (arguments, words the error line must hold, exit code: 2 for a malformed command line,
# which argparse rejects, 1 for anything else)
CASES = {
    # corpus
    "missing corpus": (["train", "--data", "{bad}/nope.txt"], "not found", 1),
    "empty corpus": (["train", "--data", "{bad}/empty.txt"], "empty", 1),
    "binary corpus": (["train", "--data", "{bad}/binary.txt"], "binary", 1),
    "non-UTF-8 corpus": (["train", "--data", "{bad}/latin1.txt"], "UTF-8", 1),
    "corpus too short": (["train", "--data", "{bad}/short.txt"], "too short", 1),
    "corpus is a folder": (["train", "--data", "{bad}"], "not a file", 1),
    # configs and hyperparameters
    "unknown config": (["train", "--config", "huge"], "invalid choice", 2),
    "batch not a number": (["train", "--batch-size", "two"], "invalid int value", 2),
    "lr not a number": (["train", "--lr", "abc"], "not a number", 2),
    "batch 0": (["train", "--batch-size", "0", "--data", "{corpus}"], "batch-size", 1),
    "negative batch": (["train", "--batch-size", "-3", "--data", "{corpus}"], "batch-size", 1),
    "lr 0": (["train", "--lr", "0", "--data", "{corpus}"], "lr must be", 1),
    "negative lr": (["train", "--lr", "-0.1", "--data", "{corpus}"], "lr must be", 1),
    "negative eval interval": (
        ["train", "--eval-interval", "-1", "--data", "{corpus}"],
        "eval-interval",
        1,
    ),
    "patience 0": (["train", "--patience", "0", "--data", "{corpus}"], "patience", 1),
    "dropout 1": (["train", "--dropout", "1.0", "--data", "{corpus}"], "dropout", 1),
    "dropout negative": (["train", "--dropout", "-0.1", "--data", "{corpus}"], "dropout", 1),
    "label smoothing 1": (
        ["train", "--label-smoothing", "1", "--data", "{corpus}"],
        "label-smoothing must be",
        1,
    ),
    "top-k 0": (["sample", "good", "--top-k", "0"], "top-k", 1),
    "temperature negative": (["sample", "good", "--temperature", "-1"], "temperature", 1),
    "tokens 0": (["sample", "good", "--tokens", "0"], "at least 1", 2),
    "unknown command": (["bogus"], "invalid choice", 2),
    # checkpoints and runs
    "truncated checkpoint": (["sample", "{bad}/truncated.safetensors"], "truncated", 1),
    "not safetensors": (
        ["sample", "{bad}/notsafetensors.safetensors"],
        "not a valid safetensors",
        1,
    ),
    "newer format": (["sample", "{bad}/newer.safetensors"], "newer", 1),
    "missing tensors": (["sample", "{bad}/missing.safetensors"], "missing", 1),
    "extra tensors": (["sample", "{bad}/extra.safetensors"], "unexpected", 1),
    "missing checkpoint file": (["sample", "{bad}/nope.safetensors"], "not found", 1),
    "other config": (["sample", "mismatch"], "not wider", 1),
    "no run.json": (["sample", "{bad}/norunjson"], "no run.json", 1),
    "unknown run": (["sample", "nope"], "no run", 1),
    "resume unknown run": (["train", "--resume", "nope"], "no run", 1),
    "resume without state": (["train", "--resume", "good"], "no saved training state", 1),
    "resume with other settings": (["train", "--resume", "good", "--lr", "0.1"], "drop --lr", 1),
    # prompts
    "empty prompt": (["sample", "good", "--prompt", ""], "empty", 1),
    "prompt too long": (["sample", "good", "--prompt", "word " * 40], "longer than", 1),
    # devices and backends
    "cuda absent": (["train", "--device", "cuda", "--data", "{corpus}"], "CUDA", 1),
    "unknown device": (["sample", "good", "--device", "tpu"], "unknown device", 1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, files, capsys):
    args, words, code = CASES[case]
    if case == "cuda absent" and torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    args = [a.format(bad=files["bad"], corpus=files["corpus"]) for a in args]
    before = tree(files["home"], files["bad"])
    assert_one_line_error(call_main(capsys, *args), code, words)
    assert tree(files["home"], files["bad"]) == before


# Through the real process, as a user runs it: the installed `lal` script where there is one
# (else `python -m lal_core.cli`), for each of the two non-zero exit codes.
REAL_CASES = {
    "malformed command line": (["train", "--config", "huge"], "invalid choice", 2),
    "damaged checkpoint": (["sample", "{bad}/truncated.safetensors"], "truncated", 1),
}


def lal_command() -> list[str]:
    script = Path(sys.executable).with_name("lal")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "lal_core.cli"]


@pytest.mark.parametrize("case", list(REAL_CASES))
def test_bad_input_in_a_real_process(case, files):
    args, words, code = REAL_CASES[case]
    args = [a.format(bad=files["bad"], corpus=files["corpus"]) for a in args]
    before = tree(files["home"], files["bad"])
    result = subprocess.run(
        [*lal_command(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LAL_HOME": str(files["home"])},
    )
    assert_one_line_error(result, code, words)
    assert result.stdout == ""
    assert tree(files["home"], files["bad"]) == before


def test_mlx_missing(files, monkeypatch, capsys):
    import lal_core.backends as backends

    monkeypatch.setattr(backends, "mlx_available", lambda: False)
    before = tree(files["home"])
    code = cli.main(["train", "--backend", "mlx", "--data", str(files["corpus"])])
    err = capsys.readouterr().err
    assert code == 1 and "uv sync --extra mlx" in err and len(err.strip().splitlines()) == 1
    assert tree(files["home"]) == before


@pytest.mark.slow
def test_no_space_left_keeps_the_previous_checkpoint(files, monkeypatch, capsys):
    import lal_core.runs.checkpoints as checkpoint

    run = files["run"]
    before = (run / "best.safetensors").read_bytes()

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    state = {k: np.zeros_like(v) for k, v in make_backend("torch", MICRO).state_dict().items()}
    with pytest.raises(checkpoint.CheckpointError, match="No space left"):
        checkpoint.save_weights(run / "best.safetensors", state, MICRO)
    assert (run / "best.safetensors").read_bytes() == before
    assert sorted(p.name for p in run.iterdir()) == ["best.safetensors", "run.json"]

    # Through the CLI: a run that cannot save says so in one line and exits non-zero.
    code = cli.main(
        [
            "train",
            "--config",
            "tiny",
            "--max-iters",
            "2",
            "--eval-interval",
            "1",
            "--batch-size",
            "2",
            "--data",
            str(files["corpus"]),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "No space left" in err and len(err.strip().splitlines()) == 1
