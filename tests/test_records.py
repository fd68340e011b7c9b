"""The run folder's typed records: today's layout opens, a newer one is refused in one line,
a damaged run.json is listed (not hidden), and metrics read back as what was written."""

import json

import pytest

from conftest import MICRO
from lal_core.cli import main
from lal_core.errors import CheckpointError
from lal_core.model.recipe import TrainConfig
from lal_core.runs import events as ev
from lal_core.runs.folder import RunDir, find_run, list_runs
from lal_core.runs.records import FORMAT_VERSION, EvalRecord, RunRecord, SFTRecord, StepRecord

# run.json as lal wrote it before the records were typed (format 1), with an SFT entry.
FORMAT_1 = {
    "format_version": 1,
    "run_id": "20261101-101010-micro-torch",
    "created": 1793527810.5,
    "model_config": MICRO.to_dict(),
    "train_config": {  # as lal wrote it then: no eval_tokens, no eval samples
        k: v
        for k, v in TrainConfig(max_iters=40, eval_interval=250).to_dict().items()
        if k not in ("eval_tokens", "eval_samples", "eval_sample_tokens")
    },
    "backend": "torch",
    "device": "cpu",
    "backend_options": {"compile": False},
    "n_params": 1_660_000,
    "data": {
        "path": "/data/input.txt",
        "sha256": "86c4e6aa",
        "tokens": 338025,
        "train_tokens": 304222,
        "val_tokens": 33803,
    },
    "iteration": 40,
    "best_val": 6.25,
    "best_iter": 30,
    "status": "completed",
    "process": {"pid": 4242, "host": "box"},
    "resumed": [{"iteration": 20, "time": 1793527900.0}],
    "error": None,
    "updated": 1793528000.0,
    "sft": {
        "epochs": 5,
        "batch_size": 4,
        "lr": 0.0003,
        "seed": 1337,
        "pairs": "built-in",
        "n_pairs": 10,
        "examples": 50,
        "status": "completed",
        "epochs_done": 5,
        "losses": [3.0, 2.5, 2.0, 1.8, 1.7],
        "steps": 65,
        "skipped_batches": 0,
        "cut_examples": 0,
        "backend": "torch",
        "device": "cpu",
        "elapsed": 12.5,
        "finished": 1793528100.0,
    },
}


def write_run(root, name: str, text: str):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(text)
    return RunDir(folder)


def test_a_format_1_run_folder_opens_typed_and_rewrites_unchanged(tmp_path):
    future_key = {**FORMAT_1, "from_a_newer_lal": {"kept": True}}
    run = write_run(tmp_path, FORMAT_1["run_id"], json.dumps(future_key))
    record = run.read()
    assert record.model_config == MICRO and record.train_config.max_iters == 40
    assert (record.status, record.best_val, record.best_iter) == ("completed", 6.25, 30)
    assert record.data.sha256 == "86c4e6aa" and record.process.pid == 4242
    assert record.resumed[0].iteration == 20 and record.backend_options == {"compile": False}
    assert isinstance(record.sft, SFTRecord) and record.sft.losses == (3.0, 2.5, 2.0, 1.8, 1.7)
    run.write(record)  # one writer: the same keys and values come back, unknown ones kept
    rewritten = json.loads(run.run_json.read_text())
    assert rewritten.pop("format_version") == FORMAT_VERSION  # written as today's layout
    assert rewritten.pop("process") == {**future_key["process"], "started": None}
    # Fields added since, at the values that mean what the old file meant: its evals scored
    # the whole val split.
    assert rewritten["train_config"].pop("eval_tokens") == 0
    assert rewritten["train_config"].pop("eval_samples") == 0  # it drew none: it still draws none
    assert rewritten["train_config"].pop("eval_sample_tokens") == 64
    assert rewritten["data"].pop("eval_tokens") is None
    assert rewritten == {
        k: v for k, v in future_key.items() if k not in ("format_version", "process")
    }


def test_a_hand_made_folder_with_few_keys_still_opens(tmp_path):
    run = write_run(tmp_path, "mine", json.dumps({"model_config": MICRO.to_dict()}))
    record = run.read()
    assert record.run_id == "mine" and record.train_config is None and record.sft is None


@pytest.mark.parametrize(
    "text, words",
    [
        (json.dumps({**FORMAT_1, "format_version": 99}), "newer than this lal reads"),
        ('{"model_config": ', "not readable JSON"),
        (json.dumps({**FORMAT_1, "iteration": "forty"}), "iteration holds 'forty'"),
        (json.dumps({**FORMAT_1, "model_config": {"name": "x"}}), "unusable config"),
        (json.dumps([1, 2]), "does not hold a JSON object"),
    ],
)
def test_an_unreadable_run_json_is_one_line_and_listed_as_damaged(tmp_path, text, words, capsys):
    write_run(tmp_path, "a-good-run", json.dumps(FORMAT_1))
    bad = write_run(tmp_path, "b-bad-run", text)
    with pytest.raises(CheckpointError, match=words) as info:
        bad.read()
    assert "\n" not in str(info.value) and str(bad.run_json) in str(info.value)
    entries = {e.run_id: e for e in list_runs(tmp_path)}
    assert entries["b-bad-run"].status == "damaged" and words in entries["b-bad-run"].error
    assert entries["a-good-run"].status == "completed"
    assert find_run(None, tmp_path).run_id == "a-good-run"  # the newest readable run
    assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    (listed,) = [line for line in lines if line.startswith("b-bad-run")]
    assert "damaged:" in listed and words in listed


def test_metrics_read_back_as_written_and_a_cut_line_is_skipped(tmp_path):
    run = write_run(tmp_path, "r", json.dumps(FORMAT_1))
    written = [
        StepRecord(iteration=0, loss=10.8, lr=3e-6, tokens_per_sec=1000.0, elapsed=0.5),
        EvalRecord(
            iteration=1,
            train_loss=9.0,
            val_loss=9.5,
            lr=6e-6,
            is_best=True,
            tokens_per_sec=900.0,
            elapsed=1.5,
            eval_seconds=0.2,
        ),
    ]
    with open(run.metrics_path, "a") as f:
        f.write("".join(json.dumps(r.to_json()) + "\n" for r in written))
        f.write('{"type": "future", "x": 1}\n{"type": "step", "iter": 2, "lo')  # cut by a crash
    assert run.read_metrics() == written
    assert run.steps() == written[:1] and run.evals() == written[1:]
    first = json.loads(run.metrics_path.read_text().splitlines()[0])
    assert first == {"type": "step", "iter": 0, "loss": 10.8, "lr": 3e-6, "tok_s": 1000.0,
                     "elapsed": 0.5}  # fmt: skip


def test_events_are_built_by_keyword():
    with pytest.raises(TypeError):
        ev.StepDone(0, 1.0, 1e-3, 100.0, 1.0)  # positional: refused
    step = ev.StepDone(iteration=0, loss=1.0, lr=1e-3, tokens_per_sec=100.0, elapsed=1.0)
    assert step.mfu is None


def test_update_rewrites_only_what_changed(tmp_path):
    run = write_run(tmp_path, "r", json.dumps(FORMAT_1))
    record = run.update(status="stopped", iteration=41)
    assert isinstance(record, RunRecord) and run.read() == record
    data = json.loads(run.run_json.read_text())
    assert (data["status"], data["iteration"]) == ("stopped", 41)
    assert data["updated"] > FORMAT_1["updated"]
    changed = ("status", "iteration", "updated", "format_version", "process")
    assert data["train_config"].pop("eval_tokens") == 0 and data["data"].pop("eval_tokens") is None
    assert data["train_config"].pop("eval_samples") == 0
    assert data["train_config"].pop("eval_sample_tokens") == 64
    assert {k: v for k, v in data.items() if k not in changed} == {
        k: v for k, v in FORMAT_1.items() if k not in changed
    }
