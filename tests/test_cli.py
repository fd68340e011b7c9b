import json

import pytest

from conftest import run_cli
from lal_core.cli import main
from lal_core.device import default_device


@pytest.fixture
def trained_run(small_corpus, isolated_home, capsys):
    code = main(
        [
            "train",
            "--config",
            "tiny",
            "--max-iters",
            "4",
            "--eval-interval",
            "2",
            "--batch-size",
            "2",
            "--data",
            str(small_corpus),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    runs = list((isolated_home / "checkpoints").iterdir())
    assert len(runs) == 1
    return runs[0], out


def test_train_writes_a_run_folder(trained_run):
    run, out = trained_run
    assert f"Device: torch/{default_device()}" in out
    assert out.count("| val ") == 3 and "iter 4 " in out
    assert str(run) in out
    info = json.loads((run / "run.json").read_text())
    assert info["model_config"]["name"] == "tiny" and info["status"] == "completed"


def test_train_recompute_flag_reaches_the_engine_and_the_run_record(
    small_corpus, isolated_home, capsys
):
    args = ["train", "--max-iters", "2", "--eval-interval", "2", "--batch-size", "2"]
    assert main([*args, "--data", str(small_corpus), "--recompute"]) == 0
    assert "recomputed activations" in capsys.readouterr().out
    (run,) = (isolated_home / "checkpoints").iterdir()
    info = json.loads((run / "run.json").read_text())
    assert info["backend_options"]["recompute"] is True  # a resume keeps it


def test_sample_streams_from_the_newest_run(trained_run, capsys):
    code = main(["sample", "--prompt", "ROMEO:", "--tokens", "20", "--seed", "1"])
    first = capsys.readouterr().out
    assert code == 0 and first.startswith("ROMEO:") and len(first) > len("ROMEO:\n")
    main(["sample", trained_run[0].name, "--prompt", "ROMEO:", "--tokens", "20", "--seed", "1"])
    assert capsys.readouterr().out == first  # same seed, same text; run id works too


def test_sample_no_int8_head_reaches_the_backend(trained_run, capsys, monkeypatch):
    import lal_core.backends as backends

    made = []
    real = backends.make_backend

    def recording(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(backends, "make_backend", recording)
    assert main(["sample", "--tokens", "3", "--seed", "1", "--no-int8-head"]) == 0
    assert len(made) == 1 and made[0].int8_head is False


def test_runs_lists_the_run(trained_run, capsys):
    assert main(["runs"]) == 0
    out = capsys.readouterr().out
    assert trained_run[0].name in out and "tiny" in out and "completed" in out


@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "--config", "huge"], "invalid choice"),
        (["train", "--batch-size", "0"], "batch-size"),
        (["train", "--lr", "abc"], "not a number"),
        (["train", "--data", "/no/such/file.txt"], "not found"),
        (["sample", "no-such-run"], "no run"),
        (["sample", "/no/such/model.safetensors"], "not found"),
        (["sample", "--tokens", "0"], "at least 1"),
        (["bogus"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(args, words):
    result = run_cli(*args, timeout=120)
    assert result.returncode != 0
    assert words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_sample_with_a_damaged_checkpoint(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    result = run_cli("sample", str(bad))
    assert result.returncode == 1 and "not a valid safetensors" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
