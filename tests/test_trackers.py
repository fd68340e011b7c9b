"""Runs in TensorBoard and Weights & Biases (`--report-to`, `lal track`), read back with the
trackers' own readers, offline: TensorBoard's EventAccumulator, W&B's offline run file."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from wandb_offline import offline_run

from conftest import FAST, MICRO, assert_one_line_error, call_main, run_cli
from lal_core.runs import events as ev
from lal_core.runs.folder import RunDir
from lal_core.trackers.send import LiveTrackers, send
from lal_core.training.request import RunRequest
from lal_core.training.train import train

pytest.importorskip("tensorboard")
pytest.importorskip("wandb")

# A tiny run through the command line: 8 steps, evals at 0, 4 and 8, one short sample each.
TRAIN = ["--max-iters", "8", "--eval-interval", "4", "--batch-size", "2", "--no-compile"]
TRAIN += ["--eval-samples", "1", "--eval-sample-tokens", "8"]


def offline_env(home: Path) -> dict[str, str]:
    """No W&B account (a home without ~/.netrc), so W&B writes offline, as it would here."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE"):
        pytest.skip("a W&B account or mode is set in this environment")
    return {"HOME": str(home), "LAL_HOME": str(home)}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, short_corpus) -> RunDir:
    home = tmp_path_factory.mktemp("tracked")
    runs = home / "runs"
    args = ["train", "--data", short_corpus, "--runs-dir", runs, *TRAIN]
    result = run_cli(*map(str, args), "--report-to", "tensorboard", "wandb", env=offline_env(home))
    assert result.returncode == 0, result.stderr
    # After the run, a line each: where it went.
    assert "tensorboard: " in result.stdout and "see it with: tensorboard --logdir" in result.stdout
    assert "wandb: offline run" in result.stdout and "wandb sync" in result.stdout
    (run,) = runs.iterdir()
    return RunDir(run)


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float, float]]]:
    """Every scalar: tag -> [(step, wall time, value)], as TensorBoard reads them."""
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.util import tensor_util

    acc = ea.EventAccumulator(str(folder), size_guidance={ea.TENSORS: 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["tensors"]:
        if tag.startswith("_hparams_"):  # the HParams plugin's own record
            continue
        values = [
            (e.step, e.wall_time, tensor_util.make_ndarray(e.tensor_proto))
            for e in acc.Tensors(tag)
        ]
        out[tag] = [
            (s, w, v.item() if v.dtype.kind != "O" else v.item().decode()) for s, w, v in values
        ]
    return out


def wandb_run(run: RunDir) -> dict:
    (folder,) = (run.path / "tracking" / "wandb").glob("offline-run-*")
    return offline_run(folder)


@pytest.mark.slow
def test_trackers_hold_the_numbers_of_the_log(tracked):
    steps, evals = tracked.steps(), tracked.evals()
    samples = tracked.eval_samples()
    assert len(steps) == 8 and [e.iteration for e in evals] == [0, 4, 8]
    record = tracked.read()

    tb = tensorboard_scalars(tracked.path / "tracking" / "tensorboard" / "train")

    def points(tag):  # steps and values; TensorBoard keeps float32
        return [s for s, *_ in tb[tag]], pytest.approx([v for *_, v in tb[tag]], rel=1e-6)

    assert points("train/loss") == ([s.iteration for s in steps], [s.loss for s in steps])
    assert points("train/lr") == ([s.iteration for s in steps], [s.lr for s in steps])
    assert points("eval/val_loss") == ([e.iteration for e in evals], [e.val_loss for e in evals])
    assert points("eval/val_bpb") == ([e.iteration for e in evals], [e.val_bpb for e in evals])
    assert [s for s, *_ in tb["writing/distinct_2"]] == [s.iteration for s in samples]
    texts = [v for *_, v in tb["samples"]]
    assert all(s.texts[0].replace("\n", "<br>") in t for s, t in zip(samples, texts, strict=True))
    config = json.loads(tb["config"][0][2].split("```json\n")[1].split("\n```")[0])
    assert config["recipe"] == record.train_config.to_dict()
    assert config["model"] == record.model_config.to_dict()
    assert "status: completed" in tb["run"][0][2] and tb["run/best_iter"][0][2] == 8

    wb = wandb_run(tracked)
    assert wb["exit_code"] == 0
    history = wb["history"]
    assert [history[s.iteration]["train/loss"] for s in steps] == [s.loss for s in steps]  # JSON
    assert [history[s.iteration]["train/tokens_per_sec"] for s in steps] == [
        s.tokens_per_sec for s in steps
    ]
    assert [history[e.iteration]["eval/val_loss"] for e in evals] == [e.val_loss for e in evals]
    assert [history[e.iteration]["eval/val_bpb"] for e in evals] == [e.val_bpb for e in evals]
    assert all(history[s.iteration]["samples._type"] == "table-file" for s in samples)
    fig = samples[-1].figures
    assert history[8]["writing/repeated_4"] == fig.repeated_4
    assert wb["config"]["recipe"] == record.train_config.to_dict()
    assert wb["summary"]["status"] == "completed"
    assert wb["summary"]["best_iter"] == record.best_iter == 8
    assert wb["summary"]["best_val"] == record.best_val


@pytest.mark.slow
def test_track_after_the_fact_gives_what_live_logging_gave(tracked):
    live_tb = tensorboard_scalars(tracked.path / "tracking" / "tensorboard" / "train")
    live_wb = wandb_run(tracked)
    for folder in (tracked.path / "tracking" / "wandb").glob("offline-run-*"):
        folder.rename(folder.with_name("live-" + folder.name))
    home = tracked.path.parents[1]
    args = ["track", str(tracked.path), "--report-to", "tensorboard", "wandb"]
    result = run_cli(*args, env=offline_env(home))
    assert result.returncode == 0, result.stderr
    assert "8 steps, 3 evals" in result.stdout

    # TensorBoard: the event files replaced, the same points at the same steps and times.
    again = tensorboard_scalars(tracked.path / "tracking" / "tensorboard" / "train")
    assert again.pop("config")[0][2] == live_tb.pop("config")[0][2]  # stamped when sent
    assert again == live_tb
    # W&B: a second offline run with the same history, config and summary.
    sent = wandb_run(tracked)

    def same(row: dict) -> dict:  # W&B's own stamps, and its file names for the tables
        return {k: v for k, v in row.items() if not k.startswith(("_", "samples."))}

    assert {s: same(r) for s, r in sent["history"].items()} == {
        s: same(r) for s, r in live_wb["history"].items()
    }
    assert sent["config"] | {"_wandb": None} == live_wb["config"] | {"_wandb": None}
    assert same(sent["summary"]) == same(live_wb["summary"])


class Raising:
    """A tracker that raises on every call."""

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise RuntimeError(f"tracker down ({name})")

        return fail


RAISING_TRACKER = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from lal_core.runs.folder import RunDir
from lal_core.trackers.send import send
from test_trackers import Raising
send(RunDir(sys.argv[1]), "train", Raising())
"""


@pytest.mark.slow
def test_a_tracker_that_fails_leaves_the_run_as_it_was(small_corpus, tmp_path):
    def losses(events):
        return [e.loss for e in events if isinstance(e, ev.StepDone)]

    plain, tracked = [], []
    request = RunRequest(MICRO, FAST, data=small_corpus, runs_dir=tmp_path / "runs")
    train(request, on_event=plain.append)
    trackers = LiveTrackers(
        ["tensorboard"],
        "train",
        command=lambda name, run: [sys.executable, "-c", RAISING_TRACKER, str(run.path)],
    )
    result = train(request, on_event=ev.chain(tracked.append, trackers))
    assert result.status == "completed"
    assert losses(tracked) == losses(plain) and len(losses(plain)) == FAST.max_iters
    (line,) = trackers.report()
    assert line.startswith("tensorboard: failed (RuntimeError: tracker down (start))")
    assert f"lal track {result.run_dir} --report-to tensorboard" in line
    # A tracker that cannot even start (its folder is not a folder) is one line, too.
    blocked = LiveTrackers(["wandb"], "train")
    folder = tmp_path / "blocked"
    (folder / "tracking").parent.mkdir()
    (folder / "tracking").write_text("not a folder")
    started = next(e for e in tracked if isinstance(e, ev.RunStarted))
    from dataclasses import replace

    blocked(replace(started, run_dir=folder))
    (line,) = blocked.report()
    assert line.startswith("wandb: not started (") and "the run goes on" in line


def test_send_maps_fine_tuning_epochs(tmp_path):
    """SFT's log: its steps and each epoch's masked loss, at the step the epoch ended."""

    class Recording:
        def __init__(self):
            self.calls = []

        def __getattr__(self, name):
            return lambda *args: self.calls.append((name, *args)) or f"{name} line"

    run = RunDir.create(MICRO.name, "torch", root=tmp_path)
    from lal_core.runs.records import RunRecord

    run.write(RunRecord(run_id=run.run_id, model_config=MICRO))
    log = ev.EventLog(run.event_log("sft"))
    started = ev.RunStarted(
        run_id=run.run_id,
        run_dir=run.path,
        kind="sft",
        model_config=MICRO,
        backend="torch",
        device="cpu",
        n_params=1,
        max_steps=2,
        header="h",
    )
    log(started)
    for i in range(2):
        log(ev.StepDone(iteration=i, loss=2.0 - i, lr=1e-4, tokens_per_sec=10.0, elapsed=i))
    log(ev.SFTEpochDone(epoch=1, epochs=1, masked_loss=1.5, skipped_batches=0, elapsed=2, line=""))
    end = {"best_val": None, "best_iter": None, "run_dir": run.path, "line": ""}
    log(ev.RunFinished(status="completed", iteration=2, elapsed=2.0, **end))
    log.close()
    tracker = Recording()
    sent = send(run, "sft", tracker)
    assert sent.steps == 2 and sent.evals == 1 and sent.status == "completed"
    names = [c[0] for c in tracker.calls]
    assert names == ["start", "scalars", "scalars", "scalars", "summary", "finish"]
    assert tracker.calls[0][1]["job"] == "sft"
    assert tracker.calls[3][1:3] == (1, {"sft/masked_loss": 1.5, "sft/epoch": 1.0})


def test_a_missing_tracker_is_one_line(capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "wandb" else real(n, *a)
    )
    result = call_main(capsys, "train", "--report-to", "wandb")
    assert_one_line_error(result, 1, "uv sync --extra wandb")
