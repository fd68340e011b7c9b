import contextlib
import io
import shutil
import subprocess
import sys

import pytest

from conftest import assert_one_line_error, call_main, run_cli
from lal_core.backends.torch.device import default_device
from lal_core.cli import main
from lal_core.runs.folder import RunDir


@pytest.fixture(scope="module")
def trained(short_corpus, tmp_path_factory):
    """One `lal train` for the module: (its run folder, what it printed). Tests get a copy."""
    home = tmp_path_factory.mktemp("trained-home")
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setenv("LAL_HOME", str(home))
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
                str(short_corpus),
            ]
        )
    assert code == 0
    runs = list((home / "checkpoints").iterdir())
    assert len(runs) == 1
    return runs[0], out.getvalue()


@pytest.fixture
def trained_run(trained, isolated_home):
    """A copy of the trained run in this test's own home, and what training printed."""
    run, out = trained
    copy = isolated_home / "checkpoints" / run.name
    shutil.copytree(run, copy)
    return copy, out


def test_train_writes_a_run_folder(trained):
    run, out = trained
    assert f"Device: torch/{default_device()}" in out
    assert out.count("| val ") == 3 and "iter 4 " in out
    assert str(run) in out
    assert {"best.safetensors", "final.safetensors", "run.json"} <= {p.name for p in run.iterdir()}
    info = RunDir(run).read()
    assert info.model_config.name == "tiny" and info.status == "completed"


def test_train_recompute_flag_reaches_the_engine_and_the_run_record(
    short_corpus, isolated_home, capsys
):
    args = ["train", "--max-iters", "2", "--eval-interval", "2", "--batch-size", "2"]
    assert main([*args, "--data", str(short_corpus), "--recompute"]) == 0
    assert "recomputed activations" in capsys.readouterr().out
    (run,) = (isolated_home / "checkpoints").iterdir()
    assert RunDir(run).read().backend_options["recompute"] is True  # a resume keeps it


def test_sample_streams_from_the_newest_run(trained_run, capsys):
    code = main(["sample", "--prompt", "ROMEO:", "--tokens", "20", "--seed", "1"])
    first = capsys.readouterr().out
    assert code == 0 and first.startswith("ROMEO:") and len(first) > len("ROMEO:\n")
    main(["sample", trained_run[0].name, "--prompt", "ROMEO:", "--tokens", "20", "--seed", "1"])
    assert capsys.readouterr().out == first  # same seed, same text; run id works too


def test_num_samples_prints_each_with_the_seed_that_draws_it_alone(
    trained_run, capsys, monkeypatch
):
    # Rows of a batch equal rows drawn alone in float32; in bf16 a batch may round otherwise
    # (how depends on the CPU and its thread count), so this checks the seeds in float32.
    import lal_core.backends.torch.backend as torch_backend

    monkeypatch.setattr(torch_backend, "default_infer_dtype", lambda device: "float32")
    args = ["sample", "--prompt", "ROMEO:", "--tokens", "12", "--top-p", "0.95"]
    assert main([*args, "--num-samples", "3", "--seed", "4"]) == 0
    batch = capsys.readouterr().out
    heads = [line for line in batch.splitlines() if line.startswith("--- sample")]
    assert heads == [f"--- sample {i + 1} (seed {4 + i}, 12 tokens) ---" for i in range(3)]
    second = batch.split(heads[1] + "\n", 1)[1].split("\n\n--- sample 3")[0]
    assert main([*args, "--seed", "5"]) == 0
    assert capsys.readouterr().out == second + "\n"  # the second sample, drawn alone


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
    "args, words, code",
    [
        (["train", "--config", "huge"], "invalid choice", 2),
        (["train", "--batch-size", "0"], "batch-size", 1),
        (["train", "--lr", "abc"], "not a number", 2),
        (["train", "--data", "/no/such/file.txt"], "not found", 1),
        (["sample", "no-such-run"], "no run", 1),
        (["sample", "/no/such/model.safetensors"], "not found", 1),
        (["sample", "--tokens", "0"], "at least 1", 2),
        (["sample", "--num-samples", "0"], "at least 1", 2),
        (["sample", "--top-p", "1.5"], "top-p must be more than 0 and at most 1", 1),
        (["sample", "--repetition-penalty", "0.5"], "repetition penalty must be 1", 1),
        (["sample", "--stop", ""], "stop string is empty", 1),
        (["sample", "--max-time", "0"], "max-time must be more than 0", 1),
        (["sample", "--seed", "-1"], "seed must be 0 or more", 2),
        (["chat", "Who?", "--top-p", "0"], "top-p must be", 1),
        (["bogus"], "invalid choice", 2),
        ([], "required: command", 2),
    ],
)
def test_bad_input_is_one_line_and_non_zero(args, words, code, isolated_home, capsys):
    assert_one_line_error(call_main(capsys, *args), code, words)
    assert list(isolated_home.iterdir()) == []  # nothing created: no runs folder, no data


def test_help_exits_zero(capsys):
    result = call_main(capsys, "train", "--help")
    assert result.returncode == 0 and result.stderr == ""
    assert "--max-iters" in result.stdout and "--resume" in result.stdout


def test_runs_without_runs(capsys):
    result = call_main(capsys, "runs")
    assert result.returncode == 0 and "no runs yet" in result.stdout and result.stderr == ""


def test_sample_with_a_damaged_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    assert_one_line_error(call_main(capsys, "sample", bad), 1, "not a valid safetensors")
    assert bad.read_bytes() == b"\x00" * 100


def test_exit_codes_through_a_real_process(tmp_path):
    """The real entry point: `sys.exit(main())` turns both kinds of error into the exit status."""
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    assert_one_line_error(run_cli("sample", str(bad), timeout=120), 1, "not a valid safetensors")
    assert_one_line_error(run_cli("sample", "--tokens", "0", timeout=120), 2, "at least 1")


def test_the_commands_that_read_run_folders_import_no_framework(tmp_path):
    """`lal runs` (and `lal --help`) start in a fraction of a second: no torch, no MLX."""
    script = (
        "import sys\n"
        "from lal_core.cli import main\n"
        "main(sys.argv[1:])\n"
        "print(sorted(m for m in ('torch', 'mlx', 'textual', 'wandb') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "runs", "--runs-dir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"
