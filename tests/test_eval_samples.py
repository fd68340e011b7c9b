"""Watching a run learn to write: samples streamed after every eval, their writing figures, and
the val loss in bits per byte."""

import json
import math
import threading
from dataclasses import replace

import numpy as np
import pytest

from conftest import call_main, wait_for
from lal_core.backends import make_backend
from lal_core.data.corpus import load_corpus, val_windows
from lal_core.data.tokenizer import decode, encode
from lal_core.errors import ConfigError
from lal_core.generation.controls import DEFAULT_TEMPERATURE, Controls
from lal_core.generation.sampling import Generation, load_for_sampling
from lal_core.model.recipe import TrainConfig
from lal_core.quality import report
from lal_core.runs import events as ev
from lal_core.runs.folder import RunDir
from lal_core.runs.follow import RunFollower
from lal_core.runs.records import SamplesRecord
from lal_core.training.evals import bits_per_byte
from lal_core.training.request import RunRequest
from lal_core.training.samples import EvalSamples
from lal_core.training.train import Trainer, train
from lal_core.writing import figures
from lal_core.writing.verbatim import VerbatimIndex

CFG = replace(
    TrainConfig(max_iters=10, eval_interval=5, batch_size=2, lr=2e-3, warmup_iters=2),
    eval_samples=2,  # two short samples after every eval
    eval_sample_tokens=16,
)


@pytest.fixture(scope="module")
def watched(tmp_path_factory, small_corpus):
    """A short micro run with samples at its evals (0, 5, 10), and every event it emitted."""
    from conftest import MICRO

    runs = tmp_path_factory.mktemp("runs")
    events: list = []
    result = train(RunRequest(MICRO, CFG, data=small_corpus, runs_dir=runs), on_event=events.append)
    return RunDir(result.run_dir), events


def pieces_by_sample(events, iteration: int) -> dict[int, str]:
    texts: dict[int, str] = {}
    for e in events:
        if isinstance(e, ev.SampleText) and e.iteration == iteration:
            texts[e.index] = texts.get(e.index, "") + e.text
    return texts


def test_every_eval_streams_its_samples_then_records_them_whole(watched):
    run, events = watched
    evals = [e.iteration for e in events if isinstance(e, ev.EvalDone)]
    done = [e for e in events if isinstance(e, ev.SamplesDone)]
    assert evals == [0, 5, 10] and [d.iteration for d in done] == evals
    for d in done:
        assert d.status == "done" and len(d.texts) == CFG.eval_samples
        # What was streamed piece by piece is the whole sample.
        streamed = pieces_by_sample(events, d.iteration)
        assert [streamed.get(i, "") for i in range(len(d.texts))] == list(d.texts)
        assert all(len(encode(t)) <= CFG.eval_sample_tokens + 2 for t in d.texts)
    # The same prompts every eval, and the eval line comes before its samples.
    assert len({d.prompts for d in done}) == 1
    kinds = [type(e).__name__ for e in events if not isinstance(e, (ev.StepDone, ev.SampleText))]
    at_five = kinds.index("EvalDone", kinds.index("EvalDone") + 1)
    assert kinds[at_five + 1 : at_five + 3] == ["SamplesStarted", "SamplesDone"]
    # metrics.jsonl holds the same records, typed.
    assert [s.texts for s in run.eval_samples()] == [d.texts for d in done]
    assert all(isinstance(s, SamplesRecord) for s in run.eval_samples())


def test_samples_at_an_eval_are_what_lal_sample_draws_from_those_weights(watched, capsys):
    run, events = watched
    last = [e for e in events if isinstance(e, ev.SamplesDone)][-1]
    assert last.iteration == CFG.max_iters  # final.safetensors holds the weights of this eval
    started = [e for e in events if isinstance(e, ev.SamplesStarted)][-1]
    # One thread, as a sample drawn during training takes (the float32 sums round alike).
    model = load_for_sampling(run.checkpoint("final"), decode_threads=1)
    for i, prompt in enumerate(last.prompts):
        again = Generation(model, prompt, CFG.eval_sample_tokens, Controls(), 1, CFG.seed + i)
        assert again.run()[0].text == last.texts[i]
    assert started.seed == CFG.seed and started.controls == Controls().describe()
    # And from the command line: the sample's text follows the prompt in what it prints.
    out = call_main(
        capsys,
        "sample",
        run.path,
        "--checkpoint",
        "final",
        "--prompt",
        last.prompts[0],
        "--seed",
        CFG.seed,
        "--tokens",
        CFG.eval_sample_tokens,
    )
    assert out.returncode == 0 and last.prompts[0] + last.texts[0] in out.stdout


def test_the_figures_are_the_reports_on_the_same_text(watched, small_corpus):
    run, _ = watched
    index = VerbatimIndex.for_corpus(load_corpus(small_corpus))
    assert report.figures_of is figures.figures_of  # one implementation
    for s in run.eval_samples():
        assert s.figures == figures.figures_of([encode(t) for t in s.texts], index)
        assert s.held_out is not None and s.held_out.memorised_8 is not None
    # The held-out baseline: the val text that follows the same prompts.
    val = np.asarray(load_corpus(small_corpus).val)
    prompts, baseline = report.text_prompts(val, CFG.eval_samples, 1, CFG.eval_sample_tokens)
    assert list(run.eval_samples()[0].prompts) == [decode(p) for p in prompts]
    assert run.eval_samples()[0].held_out == figures.figures_of(baseline, index)


def test_bits_per_byte_on_a_hand_built_text():
    text = "a naïve café, 日本語 and ☃ — bytes, not characters"
    tokens = np.asarray(encode(text))
    first = len(decode(tokens[:1].tolist()).encode())  # the first token is context, not scored
    scale = bits_per_byte(tokens, np.array([0]), len(tokens) - 1)
    utf8 = len(text.encode()) - first
    assert utf8 > len(text) - first  # multi-byte characters count every byte
    assert scale == pytest.approx((len(tokens) - 1) / (utf8 * math.log(2)), rel=1e-12)
    # A model as unsure as a fair coin per byte scores one bit per byte.
    assert (math.log(2) * utf8 / (len(tokens) - 1)) * scale == pytest.approx(1.0)


def test_every_eval_and_run_json_give_bits_per_byte(watched, small_corpus):
    run, events = watched
    corpus = load_corpus(small_corpus)
    block = run.read().model_config.block_size
    starts = val_windows(corpus.val, block, CFG.eval_tokens)
    targets = np.concatenate([corpus.val[s + 1 : s + 1 + block] for s in starts])
    utf8 = len(decode(targets.tolist()).encode())  # TinyShakespeare: every token whole
    for e in [e for e in events if isinstance(e, ev.EvalDone)]:
        expected = e.val_loss * targets.size / utf8 / math.log(2)
        assert e.val_bpb == pytest.approx(expected, rel=1e-9)
        assert f"({e.val_bpb:.3f} bpb)" in e.line
    record = run.read()
    best = next(r for r in run.evals() if r.iteration == record.best_iter)
    assert record.best_bpb == pytest.approx(best.val_bpb)


@pytest.mark.slow
def test_a_follower_started_mid_stream_sees_whole_samples(tmp_path, small_corpus):
    from conftest import MICRO

    cfg = replace(CFG, max_iters=30, eval_sample_tokens=48, eval_samples=3)
    request = RunRequest(MICRO, cfg, data=small_corpus, runs_dir=tmp_path)
    trainer = Trainer(request, run_id="watched")
    thread = threading.Thread(target=trainer.run_training)
    thread.start()
    try:
        log = tmp_path / "watched" / "metrics.jsonl"
        wait_for(lambda: log.is_file() and "sample_text" in log.read_text(), what="a sample")
        seen = list(RunFollower(RunDir(tmp_path / "watched")).events())
    finally:
        trainer.stop.set()
        thread.join()
    done = [e for e in seen if isinstance(e, ev.SamplesDone)]
    assert done and all(d.status in ("done", "stopped") for d in done)
    for d in done:
        streamed = pieces_by_sample(seen, d.iteration)
        assert [streamed.get(i, "") for i in range(len(d.texts))] == list(d.texts)


def test_a_stop_during_the_samples_is_taken_at_once(tmp_path, small_corpus):
    from conftest import MICRO

    stop = ev.StopRequest()
    events = []

    def on_event(event):
        events.append(event)
        if isinstance(event, ev.SampleText) and event.iteration == 5:
            stop.set("test")

    cfg = replace(CFG, eval_sample_tokens=200, eval_samples=3)
    request = RunRequest(MICRO, cfg, data=small_corpus, runs_dir=tmp_path)
    result = Trainer(request, on_event=on_event, stop=stop).run_training()
    assert result.status == "stopped" and result.iteration == 5
    done = [e for e in events if isinstance(e, ev.SamplesDone)]
    assert done[-1].iteration == 5 and done[-1].status == "stopped" and done[-1].figures is None
    pieces = [e for e in events if isinstance(e, ev.SampleText) and e.iteration == 5]
    assert len(pieces) <= 2  # the one that asked, and none drawn after the request


def test_samples_off_means_no_sample_events(tmp_path, small_corpus):
    from conftest import MICRO

    cfg = replace(CFG, max_iters=5, eval_samples=0)
    result = train(RunRequest(MICRO, cfg, data=small_corpus, runs_dir=tmp_path))
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    types = {json.loads(line)["type"] for line in lines}
    assert "eval" in types and not [t for t in types if "sample" in t]
    with pytest.raises(ConfigError, match="eval-samples must be 0"):
        TrainConfig(eval_samples=-1).validate()
    assert TrainConfig.from_dict({"max_iters": 5}).eval_samples == 0  # a run from before them


def test_eval_samples_keep_the_runs_own_temperature(small_corpus):
    from conftest import MICRO

    backend = make_backend("torch", MICRO, seed=0)
    corpus = load_corpus(small_corpus)
    # The default is the sampler's; a run sets its own, and greedy (0) is allowed.
    assert TrainConfig().eval_temperature == DEFAULT_TEMPERATURE
    for temperature in (0.7, 0.0):
        cfg = replace(CFG, eval_temperature=temperature)
        samples = EvalSamples.for_pretraining(backend, corpus, cfg, ev.StopRequest())
        assert samples.controls == Controls(temperature=temperature)
    # The last, greedy: the same text twice.
    assert samples.draw(1, lambda e: None).texts == samples.draw(1, lambda e: None).texts
    # A run from before the field drew at the sampler's default then (0.8), and resumes so.
    assert TrainConfig.from_dict({"max_iters": 5}).eval_temperature == 0.8
    assert (
        TrainConfig.from_dict(TrainConfig(eval_temperature=1.0).to_dict()).eval_temperature == 1.0
    )
    with pytest.raises(ConfigError, match="eval-temperature must be 0"):
        TrainConfig(eval_temperature=-1.0).validate()


def test_a_sample_that_is_not_finite_is_one_line_not_a_crash(small_corpus):
    from conftest import MICRO

    backend = make_backend("torch", MICRO, seed=0)
    weights = backend.state_dict()
    weights["wte.weight"] = np.full_like(weights["wte.weight"], np.nan)
    backend.load_state_dict(weights)
    corpus = load_corpus(small_corpus)
    samples = EvalSamples.for_pretraining(backend, corpus, CFG, ev.StopRequest())
    events = []
    record = samples.draw(7, events.append)
    assert record.status == "failed" and record.figures is None
    assert "not finite" in record.line and "\n" not in record.line
    assert isinstance(events[-1], ev.SamplesDone) and events[-1].line == record.line


def test_lal_watch_prints_the_samples_under_each_eval_line_or_hides_them(watched, capsys):
    run, events = watched
    shown = call_main(capsys, "watch", run.path)
    last = [e for e in events if isinstance(e, ev.SamplesDone)][-1]
    out = shown.stdout
    assert shown.returncode == 0 and out.count("samples at iter") == 3
    assert out.index("iter 5 ") < out.index("samples at iter 5") < out.index("iter 10 ")
    assert last.texts[0].split("\n")[0] in out and "writing: distinct-2" in out
    hidden = call_main(capsys, "watch", run.path, "--no-samples")
    assert "samples at iter" not in hidden.stdout and hidden.stdout.count("| val ") == 3


@pytest.mark.slow
def test_lal_plot_and_runs_show_the_writing_figures_and_bits_per_byte(watched, tmp_path, capsys):
    import csv

    run, _ = watched
    out = call_main(capsys, "plot", run.path, "-o", tmp_path / "c.png", "--csv", tmp_path / "c.csv")
    assert out.returncode == 0 and (tmp_path / "c.png").stat().st_size > 10_000
    rows = list(csv.DictReader((tmp_path / "c.csv").open()))
    samples = run.eval_samples()
    assert [int(r["iter"]) for r in rows] == [s.iteration for s in samples]
    for row, s, e in zip(rows, samples, run.evals(), strict=True):
        assert float(row["distinct_2"]) == pytest.approx(s.figures.distinct_2)
        assert float(row["in_loop"]) == s.figures.looping / s.figures.samples
        assert float(row["held_out_memorised_8"]) == pytest.approx(s.held_out.memorised_8)
        assert float(row["val_bpb"]) == pytest.approx(e.val_bpb)
    listed = call_main(capsys, "runs", "--runs-dir", run.path.parent)
    header, line = listed.stdout.splitlines()[:2]
    assert "bpb" in header and f"{run.read().best_bpb:.3f}" in line
