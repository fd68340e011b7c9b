"""What users take away: `lal export` (a Hugging Face GPT-2 folder, checked by loading it with
transformers) and `lal plot` (a PNG or SVG of the loss curves, and a CSV of the evals)."""

from __future__ import annotations

import csv
import json
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import FAST, MICRO, assert_one_line_error, call_main
from lal_core.backends import make_backend
from lal_core.data.tokenizer import encode
from lal_core.export.plot import Curves, figure
from lal_core.generation.sampling import generate_ids
from lal_core.runs.checkpoints import save_weights
from lal_core.runs.folder import RunDir
from lal_core.runs.records import EvalRecord, RunRecord, StepRecord
from lal_core.sft.chat_format import chat_prompt
from lal_core.training.request import RunRequest
from lal_core.training.train import train


def checkpoint(folder: Path, cfg=MICRO, sft: bool = False, seed: int = 0) -> tuple[Path, object]:
    """A checkpoint whose weights are far from their initial values (so a transposed or
    misplaced tensor shows in the logits), and the torch backend holding them."""
    # float32 sampling (the default on a native-bf16 CPU is bf16): transformers runs float32
    backend = make_backend("torch", cfg, seed=seed, infer_dtype="float32", int8_head=False)
    rng = np.random.default_rng(seed)
    weights = {
        k: (v + rng.normal(0.0, 0.3, v.shape)).astype(np.float32)
        for k, v in backend.state_dict().items()
    }
    backend.load_state_dict(weights)
    path = folder / ("sft.safetensors" if sft else "best.safetensors")
    meta = {"sft": {"epochs": 5}, "base": "best"} if sft else None
    save_weights(path, weights, cfg, meta)
    return path, backend


# -- the Hugging Face folder, loaded by transformers -------------------------------------------
@pytest.fixture(scope="module")
def transformers():
    import transformers  # a dev dependency: the check of the export, never skipped

    return transformers


@pytest.mark.slow
@pytest.mark.parametrize("bias", [False, True], ids=["lal", "with-biases"])
def test_transformers_loads_the_export_with_the_same_logits_and_tokens(
    bias, tmp_path, transformers, capsys
):
    import torch

    path, lal = checkpoint(tmp_path, replace(MICRO, bias=bias))
    result = call_main(capsys, "export", str(path), "-o", str(tmp_path / "hf"))
    assert result.returncode == 0, result.stderr
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert model.config.activation_function == "gelu"  # lal's exact GELU, not gelu_new

    tokens = encode("ROMEO: But soft, what light through yonder window breaks?")[:32]
    ours = lal.logits(np.array([tokens]))[0]
    with torch.no_grad():
        theirs = model(torch.tensor([tokens])).logits[0].numpy()
    assert np.abs(ours).max() > 1.0  # logits far from zero: a wrong tensor could not hide
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)

    prompt = tokens[:8]
    greedy = [t for t, _ in generate_ids(lal, prompt, 16, temperature=0)]
    out = model.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False)
    assert out[0, len(prompt) :].tolist() == greedy
    assert len(set(greedy)) > 1  # not one token repeated: the comparison says something

    generation = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert (generation["temperature"], generation["top_k"]) == (1.0, 50)  # lal's defaults


@pytest.mark.slow
def test_the_exported_tokenizer_encodes_as_lal(tmp_path, transformers, shakespeare):
    path, _ = checkpoint(tmp_path)
    from lal_core.export import export_hf

    export_hf(path, tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    head = shakespeare.read_text()[:5_000]
    for text in ("Hello world", head, "naïve café 🙂 <|end|>\n\n  spaces"):
        assert tok(text)["input_ids"] == encode(text)
        assert tok.decode(encode(text)) == text
    assert tok.eos_token_id == 50256 and tok.decode([50256]) == "<|endoftext|>"
    assert tok.chat_template is None  # a base model has no chat format


@pytest.mark.slow
def test_an_sft_export_renders_lal_chat_prompt(tmp_path, transformers, capsys):
    path, _ = checkpoint(tmp_path, sft=True)
    result = call_main(capsys, "export", str(path), "-o", str(tmp_path / "hf"))
    assert result.returncode == 0 and "chat template" in result.stdout
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    question = "Who is Juliet? "
    messages = [{"role": "user", "content": question}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == chat_prompt(question)  # what `lal chat` builds
    ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert list(ids) == encode(chat_prompt(question))  # and the tokens lal generates from
    system = [{"role": "system", "content": "Be brief."}, *messages]
    assert tok.apply_chat_template(system, tokenize=False, add_generation_prompt=True) == (
        chat_prompt(question).replace(
            "You are a helpful assistant trained on Shakespeare.", "Be brief."
        )
    )


# -- export: bad input -----------------------------------------------------------------------------
def test_export_refuses_a_folder_in_use_and_a_foreign_file(tmp_path, capsys):
    path, _ = checkpoint(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")

    result = call_main(capsys, "export", str(path), "-o", str(out))
    assert_one_line_error(result, 1, "exists and is not empty")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]  # untouched

    foreign = tmp_path / "model.safetensors"
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(3, dtype=np.float32)}, str(foreign), {"format": "pt"})
    for bad in (foreign, tmp_path / "missing.safetensors"):
        assert_one_line_error(
            call_main(capsys, "export", str(bad), "-o", str(tmp_path / "x")), 1, str(bad)
        )
    assert not (tmp_path / "x").exists()
    assert_one_line_error(
        call_main(capsys, "export", str(path), "-o", str(tmp_path / "no" / "such")),
        1,
        "does not exist",
    )

    result = call_main(capsys, "export", str(path), "-o", str(out), "--force")
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert "notes.txt" not in names and {"config.json", "model.safetensors", "vocab.json"} <= set(
        names
    )
    assert (
        sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    )  # no temp left


@pytest.mark.slow
def test_export_of_a_run_takes_its_best_checkpoint_and_says_which(tmp_path, capsys, small_corpus):
    cfg = replace(FAST, max_iters=4)
    run = train(RunRequest(MICRO, cfg, data=small_corpus)).run_dir
    result = call_main(capsys, "export", run.name, "-o", str(tmp_path / "hf"))
    assert result.returncode == 0 and str(run / "best.safetensors") in result.stdout
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["n_layer"], config["n_embd"], config["n_positions"]) == (2, 32, 32)
    assert_one_line_error(
        call_main(capsys, "export", run.name, "--checkpoint", "sft", "-o", str(tmp_path / "s")),
        1,
        "no sft checkpoint",
    )


# -- plot and CSV ----------------------------------------------------------------------------------
def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def two_runs(small_corpus) -> list[RunDir]:
    return [
        RunDir(train(RunRequest(MICRO, replace(FAST, seed=seed), data=small_corpus)).run_dir)
        for seed in (0, 1)
    ]


@pytest.mark.slow
def test_plot_writes_a_picture_and_the_csv_holds_every_eval(two_runs, tmp_path, capsys):
    a, b = two_runs
    result = call_main(capsys, "plot", a.run_id)  # no -o: curves.png in the run folder
    assert result.returncode == 0 and str(a.path / "curves.png") in result.stdout
    assert png_size(a.path / "curves.png") == (1350, 1350)  # loss, then how it writes

    png, svg, table = tmp_path / "both.png", tmp_path / "both.svg", tmp_path / "evals.csv"
    result = call_main(capsys, "plot", a.run_id, b.run_id, "-o", str(png), "--csv", str(table))
    assert result.returncode == 0, result.stderr
    assert png_size(png) == (1350, 1350)
    assert call_main(capsys, "plot", a.run_id, "-o", str(svg)).returncode == 0
    assert "<svg" in svg.read_text()[:1000]

    rows = list(csv.DictReader(table.open()))
    assert list(rows[0])[:5] == ["run", "iter", "train_loss", "val_loss", "val_bpb"]
    assert "distinct_2" in rows[0] and "held_out_memorised_8" in rows[0]
    expected = [(r.run_id, e) for r in (a, b) for e in r.evals()]
    assert len(rows) == len(expected) == 2 * 4  # evals at 0, 4, 8, 12 in each run
    for row, (run_id, e) in zip(rows, expected, strict=True):
        assert row["run"] == run_id and int(row["iter"]) == e.iteration
        values = [float(row[k]) for k in ("train_loss", "val_loss", "lr", "elapsed")]
        assert values == [e.train_loss, e.val_loss, e.lr, e.elapsed]  # as metrics.jsonl holds


def test_the_picture_marks_best_and_early_stop_and_reads_without_colour():
    record = RunRecord(run_id="r1", model_config=MICRO, status="early_stopped", iteration=30)
    evals = [
        EvalRecord(iteration=i, train_loss=5 - i / 10, val_loss=v, elapsed=i)
        for i, v in [(0, 5.0), (10, 4.0), (20, 4.5), (30, 4.8)]
    ]
    steps = [StepRecord(iteration=i, loss=5 - i / 20) for i in range(30)]
    other = Curves(replace(record, run_id="r2", status="completed"), steps, evals)
    fig = figure([Curves(record, steps, evals), other])
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert "r1 best val 4.000 @ 10" in lines and "r1 early stop @ 30" in lines
    assert not any("r2 early stop" in label for label in lines)  # r2 did not stop early
    # Train, val and the smoothed step loss differ by line style; the runs by their markers.
    styles = {k: lines[f"r1 {k}"].get_linestyle() for k in ("train", "val", "step loss (smoothed)")}
    assert len(set(styles.values())) == 3
    assert lines["r1 val"].get_marker() != lines["r2 val"].get_marker()


def test_plot_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    empty = RunDir.create(MICRO.name, "torch")  # a run that has not reached its first eval
    empty.write(RunRecord(run_id=empty.run_id, model_config=MICRO))
    out = tmp_path / "c.png"
    assert_one_line_error(
        call_main(capsys, "plot", empty.run_id, "-o", str(out)), 1, "no evals yet"
    )
    assert_one_line_error(
        call_main(capsys, "plot", empty.run_id, "-o", str(tmp_path / "c.jpg")), 1, ".png or .svg"
    )
    assert_one_line_error(call_main(capsys, "plot", "no-such-run"), 1, "no-such-run")
    assert not out.exists() and not (empty.path / "curves.png").exists()
