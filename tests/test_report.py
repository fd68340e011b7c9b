"""`lal report`: the figures on constructed texts, the verbatim index, and the command."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import FAST, MICRO, assert_one_line_error, call_main
from lal_core.data.corpus import load_corpus
from lal_core.data.tokenizer import encode
from lal_core.quality.report_file import ColumnResult, QualityReport, format_report, read_report
from lal_core.runs.folder import RunDir
from lal_core.runs.records import Figures
from lal_core.training.request import RunRequest
from lal_core.training.train import train
from lal_core.writing.figures import figures_of
from lal_core.writing.repetition import distinct, find_loop, repeated_share
from lal_core.writing.verbatim import VerbatimIndex, suffix_array


# -- figures on constructed texts --------------------------------------------------------------
def test_a_phrase_repeated_is_a_loop_and_plain_text_is_not():
    spec = encode("Then a man of a man of a man of a man, said he.")  # the write-up's loop
    assert find_loop(spec) is not None and find_loop(spec).period == 3
    once = encode("Then a man of a man, said he, and went his way to the town.")
    assert find_loop(once) is None
    refrain = encode("With hey, ho, the wind and the rain.\n" * 3)  # a refrain, not a loop
    loop = find_loop(refrain)
    assert loop is not None and loop.repeats >= 3  # ... unless it comes back to back
    speech = encode("But soft, what light through yonder window breaks? It is the east.")
    assert find_loop(speech) is None
    phrase = encode(" the king is dead") * 6
    assert repeated_share(phrase) > 0.7 and distinct(phrase, 2) < 0.3
    assert repeated_share(speech) == 0 and distinct(speech, 1) > 0.9


def test_suffix_array_sorts_every_suffix():
    rng = np.random.default_rng(0)
    for n, vocab in ((1, 3), (7, 2), (60, 3), (300, 50)):
        tokens = rng.integers(0, vocab, n).astype(np.uint16)
        want = sorted(range(n), key=lambda i: tokens[i:].tolist())
        assert suffix_array(tokens).tolist() == want


@pytest.fixture(scope="module")
def index(shakespeare) -> tuple[VerbatimIndex, np.ndarray, np.ndarray]:
    corpus = load_corpus(shakespeare)
    return VerbatimIndex.for_corpus(corpus), np.asarray(corpus.train), np.asarray(corpus.val)


def test_a_slice_of_the_training_text_is_memorised_whole(index):
    idx, train_tokens, _ = index
    piece = train_tokens[5_000:5_100].tolist()
    found = idx.verbatim(piece)
    assert found.memorised == 1.0 and found.longest == 100
    assert encode(found.longest_text) == piece
    # Two training slices glued: the longest run is the longer slice, found where it is.
    glued = train_tokens[9_000:9_030].tolist() + train_tokens[20_000:20_050].tolist()
    found = idx.verbatim(glued)
    assert found.longest >= 50 and 0.8 < found.memorised < 1.0


def test_shuffled_and_held_out_text_are_neither_memorised_nor_loops(index):
    idx, train_tokens, val_tokens = index
    shuffled = np.random.default_rng(1).permutation(train_tokens[5_000:5_100]).tolist()
    found = idx.verbatim(shuffled)
    assert found.memorised < 0.05 and found.longest < 8
    assert find_loop(shuffled) is None
    held_out = idx.verbatim(val_tokens[1_000:1_200].tolist())
    assert held_out.memorised < 0.3  # the corpus's own phrases, not the text


def test_invented_words_are_those_the_training_text_never_uses(index):
    idx, train_tokens, _ = index
    # Training text uses only its own words; a cut word at either end is not counted.
    assert idx.invented(train_tokens[5_000:5_200].tolist()) == 0.0
    line = encode(" my lord, thou art grac and the thoust wooing of the king")
    assert idx.invented(line) == pytest.approx(2 / 10)  # "grac", "thoust" of the ten inside
    assert idx.invented(encode(" my lord")) is None  # no word between the first and last
    # Upper case and inner apostrophes are the training text's words too.
    assert idx.invented(encode(" I ROMEO look'd upon the king")) == 0.0
    figures = figures_of([line, train_tokens[5_000:5_200].tolist()], idx)
    assert figures.invented_words == pytest.approx(0.1) and figures.invented_words_se > 0
    assert "invented words 10.0%" in figures.describe()


# -- the command -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(small_corpus, tmp_path_factory) -> RunDir:
    root = tmp_path_factory.mktemp("report-runs")
    return RunDir(
        train(
            RunRequest(MICRO, replace(FAST, patience=100), data=small_corpus, runs_dir=root)
        ).run_dir
    )


@pytest.fixture
def run(trained, isolated_home) -> RunDir:
    copy = isolated_home / "checkpoints" / trained.run_id
    shutil.copytree(trained.path, copy)
    return RunDir(copy)


SMALL = ["--prompts", "2", "--samples", "3", "--tokens", "20"]


def test_report_compares_best_and_final_with_held_out_text(run, capsys):
    result = call_main(capsys, "report", run.run_id, "--checkpoint", "best", "final", *SMALL)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "best" in out and "final" in out and "held-out text" in out
    assert "samples in a loop" in out and "memorised 8-grams" in out
    saved = read_report(run)
    assert [c.label for c in saved.columns] == ["best", "final"]
    assert saved.samples == 3 and len(saved.prompts) == 2
    assert all(len(c.texts) == 2 and all(len(t) == 3 for t in c.texts) for c in saved.columns)
    assert saved.baseline.samples == 6 and saved.baseline.val_loss is None
    # The val loss is the one the run recorded for its best checkpoint (same backend, dtype).
    assert saved.columns[0].figures.val_loss == pytest.approx(run.read().best_val, abs=1e-3)
    # Held-out text is real text: more varied than a micro model's samples, and not a loop.
    assert saved.baseline.looping == 0
    assert saved.baseline.distinct_2 > 0.8


def test_each_mean_figure_has_its_standard_error_over_the_samples(index):
    samples = [encode("To be, or not to be, that is the question."), encode("a b a b a b a b a b")]
    samples.append(encode("Whether 'tis nobler in the mind to suffer the slings"))
    figures = figures_of(samples, index[0])
    shares = [repeated_share(s, 4) for s in samples]
    assert figures.repeated_4 == pytest.approx(np.mean(shares))
    assert figures.repeated_4_se == pytest.approx(np.std(shares, ddof=1) / np.sqrt(3))
    assert figures.distinct_2_se > 0 and figures.memorised_8_se is not None
    assert figures_of(samples[:1], index[0]).distinct_2_se is None  # one sample: no spread


def column(label: str, **figures) -> ColumnResult:
    base = dict(samples=40, distinct_1=0.6, distinct_2=0.9, looping=2, memorised_8=0.1)
    base |= dict(longest=5, longest_text="", distinct_1_se=0.01, distinct_2_se=0.01)
    base |= dict(repeated_4=0.10, repeated_4_se=0.01, memorised_8_se=0.01)
    return ColumnResult(label, "c", "torch", "t", Figures(**(base | figures)), ())


def test_the_table_gives_each_figures_error_and_marks_what_is_within_noise():
    columns = (column("best"), column("near", repeated_4=0.12), column("far", repeated_4=0.17))
    report = QualityReport("text", "", ("p",), (), 40, 128, 1, columns, None, ())
    rows = {line[:26].strip(): line[26:].split() for line in format_report(report).splitlines()}
    assert rows["repeated 4-grams"] == [
        "0.100",
        "±0.010",
        "0.120",
        "±0.010",
        "≈",
        "0.170",
        "±0.010",
    ]
    assert rows["samples in a loop"][:2] == ["2/40", "±1.6"]  # 40 sqrt(p (1 - p) / 40), p 3/42
    assert "within two standard errors" in format_report(report)
    # A report written before the errors were kept: its figures, without them.
    old = json.loads(json.dumps(report.to_json()))
    for c in old["columns"]:
        c["figures"] = {k: v for k, v in c["figures"].items() if not k.endswith("_se")}
    assert "±0.010" not in format_report(QualityReport.from_json(old)).split("loop")[0]


def test_the_sampling_table_ranks_settings_by_their_distance_from_held_out_text():
    path = Path(__file__).parent.parent / "bench" / "sampling_table.py"
    spec = importlib.util.spec_from_file_location("sampling_table", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    held = column("held", repeated_4=0.06, memorised_8=0.05, distinct_2=0.85).figures
    columns = (
        column("0.8"),
        column("1.0", repeated_4=0.07, memorised_8=0.08, distinct_2=0.88),
        column("near", repeated_4=0.11),
    )
    report = QualityReport("text", "", ("p",), (), 40, 128, 1, columns, held, ())
    lines = bench.table(report).splitlines()
    rows = [line.split(" | ") for line in lines if line.startswith("| t ")]
    assert [r[2] for r in rows] == ["0.100 ± 0.010", "0.070 ± 0.010", "0.110 ± 0.010 ≈"]
    far = [float(r[-1].rstrip(" |")) for r in rows]
    # In standard errors of the difference (0.01 * sqrt 2): 0.8 is 0.14 away (9.9), 1.0 0.07.
    assert far[1] < far[0] < far[2] and far[0] == pytest.approx(0.14 / 0.01 / 2**0.5, abs=0.1)


@pytest.mark.slow
def test_report_settings_columns_share_the_seeds_and_json_is_the_saved_report(run, capsys):
    args = ["report", run.run_id, *SMALL, "--settings", "", "top_k=1", "temperature=0", "--json"]
    result = call_main(capsys, *args)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [c["label"] for c in data["columns"]] == ["as given", "top_k=1", "temperature=0"]
    # top-k 1 is greedy whatever the temperature: the same samples as temperature 0.
    assert data["columns"][1]["texts"] == data["columns"][2]["texts"]
    assert data["columns"][0]["texts"] != data["columns"][1]["texts"]
    assert json.loads(json.dumps(read_report(run).to_json())) == data


@pytest.mark.slow
def test_report_on_a_run_being_written_prints_but_does_not_save(run, capsys):
    with run.lock("train"):
        result = call_main(capsys, "report", run.run_id, *SMALL)
    assert result.returncode == 0 and "distinct-1" in result.stdout
    assert "report not saved" in result.stderr and "is being written by training" in result.stderr
    assert read_report(run) is None


@pytest.mark.parametrize(
    "args, words, code",
    [
        (["--samples", "0"], "at least 1", 2),
        (["--settings", "top_q=0.9"], "unknown sampling setting 'top_q=0.9'", 1),
        (["--settings", "top_p=2"], "top-p must be", 1),
        (["--prompt", ""], "prompt is empty", 1),
        (["--checkpoint", "sft"], "no sft checkpoint", 1),
        (["--tokens", "100000"], "fewer than a prompt and a sample need", 1),
    ],
)
def test_report_bad_input_is_one_line(run, capsys, args, words, code):
    assert_one_line_error(call_main(capsys, "report", run.run_id, *args), code, words)
    assert read_report(run) is None


def test_reading_a_report_imports_no_framework():
    # The dashboard reads a run's report on its UI thread when the run is opened.
    code = (
        "import sys, lal_core.quality.report_file; "
        "print('torch' in sys.modules, 'mlx' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
