"""A run folder written by lal before its regrouping (commit 581416a) opens unchanged: listed,
followed, sampled, scored and resumed as the code that wrote it did (tests/fixtures/run_581416a,
whose README says how it was made)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import call_main
from lal_core.data.tokenizer import encode
from lal_core.generation.sampling import generate_ids, load_for_sampling
from lal_core.quality.report_file import read_report
from lal_core.quality.scoring import score
from lal_core.runs import events as ev
from lal_core.runs.folder import RunDir, list_runs
from lal_core.runs.follow import RunFollower
from lal_core.training.train import Trainer

FIXTURE = Path(__file__).parent / "fixtures" / "run_581416a"
RUN_ID = "20261206-190000-fixture-torch"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


@pytest.fixture
def old_run(tmp_path) -> RunDir:
    """A copy of the folder in a runs folder of its own, run.json pointed at a copy of its
    corpus (the one change: the path it recorded was the writer machine's)."""
    runs = tmp_path / "runs"
    shutil.copytree(FIXTURE / RUN_ID, runs / RUN_ID)
    corpus = shutil.copy(FIXTURE / "corpus.txt", tmp_path / "corpus.txt")
    run_json = runs / RUN_ID / "run.json"
    data = json.loads(run_json.read_text())
    data["data"]["path"] = str(corpus)
    run_json.write_text(json.dumps(data, indent=2))
    return RunDir(runs / RUN_ID)


def test_it_is_listed_with_its_record_and_fine_tune(old_run):
    (entry,) = list_runs(old_run.path.parent)
    record = entry.record
    assert (entry.run_id, entry.status, entry.config) == (RUN_ID, "completed", "fixture")
    assert (record.format_version, record.iteration, record.best_iter) == (2, 12, 12)
    assert record.best_val == pytest.approx(EXPECTED["eval_best"], abs=1e-5)
    assert record.train_config.eval_interval == 4 and record.backend_options["dtype"] == "float32"
    assert record.sft.status == "completed" and record.sft.examples == 50
    assert read_report(old_run).columns[0].label == "best"


def test_its_logs_replay_as_the_events_it_emitted(old_run):
    train = list(RunFollower(old_run, "train").events())
    kinds = [type(e) for e in train]
    assert kinds[0] is ev.RunStarted and kinds[-1] is ev.RunFinished
    assert kinds.count(ev.StepDone) == 12 and kinds.count(ev.EvalDone) == 4
    assert [e.iteration for e in train if isinstance(e, ev.EvalDone)] == [0, 4, 8, 12]
    saved = [e for e in train if isinstance(e, ev.CheckpointSaved)]
    assert {e.path.parent for e in saved} == {old_run.path}  # paths point where it is now
    sft = list(RunFollower(old_run, "sft").events())
    assert any(isinstance(e, ev.SFTEpochDone) for e in sft)
    assert isinstance(sft[-1], ev.RunFinished) and sft[-1].status == "completed"


def test_its_checkpoints_load_to_the_same_logits_and_tokens(old_run):
    model = load_for_sampling(
        old_run.checkpoint("best"), "torch", "cpu", infer_dtype="float32", int8_head=False
    )
    logits = model.logits(np.array([EXPECTED["logits_input"]], dtype=np.int64))[0, -1]
    assert np.allclose(logits[:8], EXPECTED["logits_last_first8"], atol=1e-5)
    assert int(logits.argmax()) == EXPECTED["logits_last_argmax"]
    greedy = [t for t, _ in generate_ids(model, encode("ROMEO:"), 12, temperature=0, seed=0)]
    assert greedy == EXPECTED["greedy"]
    for kind in ("final", "sft"):
        assert load_for_sampling(old_run.checkpoint(kind), "torch", "cpu").cfg.n_embd == 2


def test_its_best_scores_its_recorded_val_loss(old_run, capsys):
    result = score(old_run.checkpoint("best"))
    assert result.loss == pytest.approx(EXPECTED["eval_best"], abs=1e-5)
    said = call_main(capsys, "eval", str(old_run.path))
    assert said.returncode == 0 and f"loss {EXPECTED['eval_best']:.4f}" in said.stdout


def test_it_resumes_to_the_losses_its_own_code_took(old_run):
    losses = []

    def steps(event) -> None:
        if isinstance(event, ev.StepDone):
            losses.append([event.iteration, event.loss])

    result = Trainer.resume(old_run.path, max_iters=16, on_event=steps).run_training()
    assert result.status == EXPECTED["resumed_status"] == "completed"
    assert [it for it, _ in losses] == [it for it, _ in EXPECTED["resumed_steps"]]
    assert np.allclose([x for _, x in losses], [x for _, x in EXPECTED["resumed_steps"]], atol=1e-4)
    assert old_run.read().resumed[-1].iteration == 12
