"""Supervised fine-tuning: the answer-only mask, the loop, chat generation and the CLI."""

import hashlib
import math
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import ScriptedBackend, call_main
from lal_core import sft
from lal_core.backends import make_backend, mlx_available
from lal_core.cli import main
from lal_core.data.tokenizer import decode, encode
from lal_core.errors import DataError
from lal_core.generation.sampling import load_for_sampling
from lal_core.quality.report_file import read_report
from lal_core.runs.checkpoints import load_weights, save_weights
from lal_core.runs.events import (
    CheckpointSaved,
    RunFailed,
    SamplesDone,
    SampleText,
    SFTEpochDone,
    StepDone,
    StopRequest,
)
from lal_core.runs.folder import RunDir, process_info
from lal_core.runs.follow import RunFollower
from lal_core.runs.records import RunRecord

END = sft.END_MARK
LOG = "sft_metrics.jsonl"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Micro models are fastest on one thread (and on a busy machine, much faster)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def chat_cfg():
    """The micro model with a context long enough for a whole chat example (~62 tokens)."""
    from conftest import MICRO

    return replace(MICRO, block_size=96)


def make_run(root, cfg, seed=0) -> RunDir:
    """A finished run folder holding fresh weights as its best and final checkpoints."""
    run = RunDir.create(cfg.name, "torch", root)
    backend = make_backend("torch", cfg, seed=seed)
    for kind in ("best", "final"):
        save_weights(run.checkpoint(kind), backend.state_dict(), cfg, {"iteration": 0})
    run.write(
        RunRecord(
            run_id=run.run_id,
            model_config=cfg,
            created=time.time(),
            device="cpu",
            status="completed",
            process=process_info(),
        )
    )
    return run


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def masked_eval(backend, examples) -> float:
    """Mean loss over the counted tokens of the examples (one padded batch), without training."""
    return backend.eval_loss(*sft.make_batch(examples))


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, chat_cfg):
    """One default SFT run (5 epochs, built-in pairs) on a micro run folder, shared by tests."""
    root = tmp_path_factory.mktemp("sft-runs")
    run = make_run(root, chat_cfg)
    before = {k: sha(run.checkpoint(k)) for k in ("best", "final")}
    events = []
    result = sft.run_sft(run, runs_root=root, on_event=events.append)
    return run, result, events, before


# -- the mask ----------------------------------------------------------------------------------
def test_prompt_targets_change_neither_loss_nor_gradients_answer_targets_do(chat_cfg):
    from lal_core.model.gpt import GPT

    pair = sft.builtin_pairs()[0]
    ex = sft.make_example(pair, chat_cfg.block_size)
    x = torch.tensor([ex.tokens])

    def loss_and_grads(ids):
        torch.manual_seed(0)
        model = GPT(chat_cfg)
        y = torch.tensor([sft.Example(tuple(ids), ex.n_prompt).targets])
        _, loss = model(x, y)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters()]

    ids = list(ex.ids)
    loss, grads = loss_and_grads(ids)
    # Other prompt tokens as targets (the inputs stay the same): nothing changes.
    other_prompt = [t if i >= ex.n_prompt else (t + 7) % 50257 for i, t in enumerate(ids)]
    assert other_prompt[: ex.n_prompt] != ids[: ex.n_prompt]
    loss2, grads2 = loss_and_grads(other_prompt)
    assert loss2 == loss
    assert all(torch.equal(a, b) for a, b in zip(grads, grads2, strict=True))
    # Another answer token as a target: the loss and the gradients change.
    other_answer = list(ids)
    other_answer[ex.n_prompt + 2] = (other_answer[ex.n_prompt + 2] + 7) % 50257
    loss3, grads3 = loss_and_grads(other_answer)
    assert loss3 != loss
    assert not torch.equal(grads[0], grads3[0])

    # And the loss is exactly the mean cross-entropy over the answer tokens.
    torch.manual_seed(0)
    model = GPT(chat_cfg)
    logits, _ = model(x)
    logp = torch.log_softmax(logits[0].double(), -1)
    answer_positions = range(ex.n_prompt - 1, len(ex.ids) - 1)
    manual = -np.mean([logp[i, ex.ids[i + 1]].item() for i in answer_positions])
    assert loss == pytest.approx(manual, rel=1e-5)
    assert ex.n_counted == len(encode(sft.chat_answer(pair.answer)))


def test_mask_counts_exactly_the_answer_and_its_closing_marker():
    for pair in sft.builtin_pairs():
        tokens = sft.token_mask(pair)
        counted = "".join(text for text, c in tokens if c)
        ignored = "".join(text for text, c in tokens if not c)
        assert counted == pair.answer + END
        assert ignored == sft.chat_prompt(pair.question)
        assert ignored.endswith("<|assistant|>") and "You are a helpful assistant" in ignored
        # Counted tokens form one run at the end: the prompt never counts.
        flags = [c for _, c in tokens]
        assert flags == sorted(flags) and flags[0] is False


def test_builtin_pairs_are_ten_repeated_five_times():
    pairs = sft.builtin_pairs()
    assert len(pairs) == 10 and len({p.question for p in pairs}) == 10
    assert sft.HELD_OUT_QUESTION not in {p.question for p in pairs}
    examples = sft.make_examples(pairs, block_size=128)
    assert len(examples) == 50 and all(e.cut == 0 for e in examples)


def test_long_example_is_cut_from_the_left_with_a_warning():
    pairs = sft.builtin_pairs()
    with pytest.warns(sft.SFTWarning, match="cut from the left"):
        examples = sft.make_examples(pairs, block_size=20, repeat=1)
    for pair, e in zip(pairs, examples, strict=True):
        assert len(e.ids) <= 21 and e.cut > 0
        counted = "".join(t for t, c in sft.token_mask(e) if c)
        assert counted.endswith(END)  # the end of the answer (and its marker) is kept
        assert counted in pair.answer + END
    x, y = sft.make_batch(examples)
    assert x.shape[1] <= 20 and (y != -1).any()


def test_batches_pad_with_ignored_targets():
    a, b = (sft.make_example(p) for p in sft.builtin_pairs()[:2])
    x, y = sft.make_batch([a, b])
    assert x.shape == y.shape == (2, max(len(a.ids), len(b.ids)) - 1)
    short = 0 if len(a.ids) < len(b.ids) else 1
    n = len((a, b)[short].ids) - 1
    assert (y[short, n:] == -1).all() and (y[short, :n] == (a, b)[short].targets).all()


# -- training ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_masked_loss_falls_over_five_epochs(tuned):
    run, result, events, _ = tuned
    epochs = [e for e in events if isinstance(e, SFTEpochDone)]
    steps = [e for e in events if isinstance(e, StepDone)]
    assert result.status == "completed" and [e.epoch for e in epochs] == [1, 2, 3, 4, 5]
    losses = [e.masked_loss for e in epochs]
    assert losses == result.losses and all(math.isfinite(v) for v in losses)
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False))
    assert losses[-1] < losses[0] - 0.5
    assert len(steps) == result.steps == 5 * math.ceil(50 / sft.DEFAULT_BATCH_SIZE)
    assert all(s.lr == sft.DEFAULT_LR for s in steps)
    # Measured afresh, without training: the answer loss of the saved model is lower.
    examples = sft.make_examples(sft.builtin_pairs(), 96, repeat=1)
    base = load_for_sampling(run.checkpoint("best"))
    after = load_for_sampling(run.checkpoint("sft"))
    assert masked_eval(after, examples) < masked_eval(base, examples) - 0.5


def test_every_epoch_answers_a_trained_and_a_held_out_question_as_it_goes(tuned, capsys):
    run, result, events, _ = tuned
    done = [e for e in events if isinstance(e, SamplesDone)]
    epochs = [e for e in events if isinstance(e, SFTEpochDone)]
    assert len(done) == len(epochs) == 5 and all(d.status == "done" for d in done)
    trained = sft.builtin_pairs()[0].question
    assert done[0].prompts == (f"Q: {trained}\nA:", f"Q: {sft.HELD_OUT_QUESTION}\nA:")
    for d in done:
        streamed = "".join(
            e.text for e in events if isinstance(e, SampleText) and e.iteration == d.iteration
        )
        assert streamed == "".join(d.texts)
        assert d.figures.closed in (0.0, 0.5, 1.0) and d.held_out is None
    # The same events in the run's fine-tuning log, printed by `lal watch --sft`.
    out = call_main(capsys, "watch", "--sft", run.path).stdout
    assert out.count("answers at iter") == 5 and "closed " in out


@pytest.mark.slow
def test_sft_checkpoint_reloads_and_answers_and_base_is_untouched(tuned):
    run, result, _, before = tuned
    assert before == {k: sha(run.checkpoint(k)) for k in ("best", "final")}
    tensors, _ = load_weights(run.checkpoint("sft"))
    base, _ = load_weights(run.checkpoint("best"))
    assert any(not np.array_equal(tensors[k], base[k]) for k in base)
    made = run.read().sft
    assert made.status == "completed" and made.examples == 50
    assert list(made.losses) == result.losses and made.lr == sft.DEFAULT_LR
    model = load_for_sampling(run.checkpoint("sft"))
    reply = sft.chat(model, "Who is Romeo?", max_new_tokens=12, seed=1)
    assert 0 < reply.tokens <= 12 and END not in reply.text and "<|assistant|>" not in reply.text
    same = sft.answer(model, "Who is Romeo?", max_new_tokens=12, seed=1)
    assert same == reply.text


def test_all_ignored_batches_are_skipped_and_reported(chat_cfg):
    backend = make_backend("torch", chat_cfg, seed=0)
    real = sft.make_examples(sft.builtin_pairs()[:3], chat_cfg.block_size, repeat=1)
    prompt_only = sft.Example(tuple(encode(sft.chat_prompt("Who?"))), n_prompt=10**6)
    assert prompt_only.n_counted == 0 and set(prompt_only.targets) == {-1}
    events = []
    result = sft.fine_tune(
        backend, real + [prompt_only] * 2, epochs=2, batch_size=1, on_event=events.append
    )
    epochs = [e for e in events if isinstance(e, SFTEpochDone)]
    steps = [e for e in events if isinstance(e, StepDone)]
    assert [e.skipped_batches for e in epochs] == [2, 2] and result.skipped_batches == 4
    assert all("skipped 2 batches with no answer tokens" in e.line for e in epochs)
    assert len(steps) == 6 and all(math.isfinite(s.loss) and s.loss > 0 for s in steps)
    assert all(math.isfinite(v) and v > 0 for v in result.losses)
    with pytest.raises(DataError, match="no example has an answer token"):
        sft.fine_tune(backend, [prompt_only], epochs=1)


def test_stop_request_ends_between_batches(chat_cfg):
    backend = make_backend("torch", chat_cfg, seed=0)
    examples = sft.make_examples(sft.builtin_pairs(), chat_cfg.block_size, repeat=1)
    stop = StopRequest()
    seen = []

    def on_event(event):
        seen.append(event)
        if isinstance(event, StepDone) and event.iteration == 1:
            stop.set()

    result = sft.fine_tune(backend, examples, epochs=5, batch_size=2, on_event=on_event, stop=stop)
    assert result.status == "stopped" and result.steps == 2
    assert len([e for e in seen if isinstance(e, SFTEpochDone)]) == 1


def test_a_non_finite_loss_ends_sft_in_one_line_and_writes_nothing(
    isolated_home, chat_cfg, monkeypatch
):
    from lal_core.backends.torch.backend import TorchBackend

    run = make_run(isolated_home / "checkpoints", chat_cfg)
    before = {p.name: sha(p) for p in run.path.iterdir()}
    real_step, taken = TorchBackend.train_step, []

    def poisoned(self, x, y, lr):
        taken.append(lr)
        return float("inf") if len(taken) == 4 else real_step(self, x, y, lr)

    monkeypatch.setattr(TorchBackend, "train_step", poisoned)
    events = []
    result = sft.run_sft(run, epochs=2, on_event=events.append)
    assert result.status == "failed" and result.steps == 3 and len(taken) == 4
    failed = [e for e in events if isinstance(e, RunFailed)]
    assert len(failed) == 1 and failed[0].message == result.message
    assert "inf at step 3" in result.message and "\n" not in result.message
    # No checkpoint, run.json unchanged; the fine-tune's log says how it ended, for followers.
    after = {p.name: sha(p) for p in run.path.iterdir() if p.name not in (".lock", LOG)}
    assert after == before
    logged = list(RunFollower(run, "sft").events())
    assert isinstance(logged[-1], RunFailed) and logged[-1].message == result.message
    assert not any(isinstance(e, (CheckpointSaved, SFTEpochDone)) for e in events)


@pytest.mark.parametrize(
    "backend_name",
    [
        "torch",
        pytest.param(
            "mlx",
            marks=[
                pytest.mark.slow,
                pytest.mark.skipif(not mlx_available(), reason="the mlx backend is not installed"),
            ],
        ),
    ],
)
def test_the_same_loop_lowers_the_answer_loss_on_each_backend(chat_cfg, backend_name):
    backend = make_backend(backend_name, chat_cfg, seed=0)
    examples = sft.make_examples(sft.builtin_pairs()[:4], chat_cfg.block_size, repeat=1)
    before = masked_eval(backend, examples)
    events = []
    result = sft.fine_tune(backend, examples, on_event=events.append)  # the defaults: 5 epochs
    assert result.status == "completed" and len(result.losses) == 5 and result.steps == 5
    assert all(b < a for a, b in zip(result.losses, result.losses[1:], strict=False))
    # Epoch 1 is the base's loss: to float32's digits, or under bf16 autocast to its training
    # softmax's (16-bit probabilities, up to 2e-3 a token; the eval's softmax is float32).
    low = getattr(backend, "dtype", "float32") != "float32"
    assert result.losses[0] == pytest.approx(before, abs=1e-3 if low else 1e-5)
    assert masked_eval(backend, examples) < before - 0.05  # after only 5 steps


# -- pairs files -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad, words",
    [
        ('{"question": "Who?", "answer": "Me."', "line 3 is not valid JSON"),
        ('["Who?", "Me."]', "line 3 is not a JSON object"),
        ('{"question": "Who?"}', 'line 3 needs a non-empty string "answer"'),
        ('{"question": 5, "answer": "Me."}', 'line 3 needs a non-empty string "question"'),
        ('{"question": "Who?", "answer": "  "}', 'line 3 needs a non-empty string "answer"'),
    ],
)
def test_malformed_pairs_line_is_named(tmp_path, bad, words):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"question": "Who is Romeo?", "answer": "A Montague."}\n\n' + bad + "\n")
    with pytest.raises(DataError, match=words) as info:
        sft.load_pairs(path)
    assert "\n" not in str(info.value)


def test_pairs_file_is_read(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        '{"question": "Who is Romeo?", "answer": "A Montague."}\n'
        '\n{"question": " Who is Tybalt? ", "answer": "A Capulet.", "note": "extra keys ignored"}\n'
    )
    assert sft.load_pairs(path) == [
        sft.QAPair("Who is Romeo?", "A Montague."),
        sft.QAPair("Who is Tybalt?", "A Capulet."),
    ]
    with pytest.raises(DataError, match="not found"):
        sft.load_pairs(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no question-answer pairs"):
        sft.load_pairs(tmp_path / "empty.jsonl")


# -- chat --------------------------------------------------------------------------------------
@pytest.fixture
def micro_chat(chat_cfg):
    return make_backend("torch", chat_cfg, seed=0)


def tokens_until(script: list[int], text: str) -> int:
    """How many of script's tokens it takes for their text to contain `text`."""
    return next(n for n in range(1, len(script) + 1) if text in decode(script[:n]))


def test_chat_stops_at_the_end_marker_and_returns_only_the_answer(micro_chat):
    script = encode("Romeo is a Montague.<|end|>\n<|user|>And more text after the end")
    scripted = ScriptedBackend(micro_chat, script)
    pieces = list(sft.stream_answer(scripted, "Who is Romeo?", max_new_tokens=50))
    assert "".join(pieces) == "Romeo is a Montague."
    assert not any("<" in p for p in pieces)  # the marker's first characters are held back
    assert scripted.drawn == tokens_until(script, "<|") < len(script) - 5  # it stopped there
    assert decode(scripted.prompt) == sft.chat_prompt("Who is Romeo?")

    reply = sft.chat(ScriptedBackend(micro_chat, script), "Who is Romeo?", max_new_tokens=50)
    assert reply.text == "Romeo is a Montague." and reply.ended
    assert reply.tokens == tokens_until(script, "<|")


def test_chat_stops_at_a_marker_the_model_only_half_writes(micro_chat):
    # Seen on a trained small base: `<|end|` without its `>`, then on and on. Only the whole
    # `<|end|>` used to end an answer; `<|`, which no answer contains, ends it now.
    script = encode("Good my lord.<|end|elia, and more of the same for the rest")
    reply = sft.chat(ScriptedBackend(micro_chat, script), "Who?", max_new_tokens=len(script))
    assert reply.text == "Good my lord." and reply.ended
    assert reply.tokens == tokens_until(script, "<|")


def test_chat_without_a_marker_stops_at_the_token_limit(micro_chat):
    script = encode(" a < b | c <")  # a marker's characters, never together
    reply = sft.chat(ScriptedBackend(micro_chat, script), "Who?", max_new_tokens=len(script))
    assert reply.text == "a < b | c <" and not reply.ended  # the held-back `<` comes out too
    assert reply.tokens == len(script)


# -- command line ------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_sft_then_chat(isolated_home, chat_cfg, capsys):
    run = make_run(isolated_home / "checkpoints", chat_cfg)
    best = sha(run.checkpoint("best"))
    code = main(["chat", "Who is Romeo?"])
    err = capsys.readouterr().err
    assert code == 1 and "run first: lal sft" in err and err.count("\n") == 1

    code = main(["sft", "--epochs", "2", "--tokens", "4", "--seed", "3"])
    out = capsys.readouterr().out
    assert code == 0
    assert "sft epoch 1/2 | masked loss" in out and "sft epoch 2/2" in out
    # The before/after is the report's chat mode: every question, both answers side by side,
    # the figures (the run records no corpus: no val loss or held-out baseline), saved.
    assert "before (best)" in out and "after (sft)" in out and "answers closed" in out
    # (each epoch's two answers, streamed as `N> Q: ...`, come before the report)
    assert out.count("> Q: ") == 4 and out.count("Q: ") - 4 == 13
    assert "Q: Who is Juliet?  (NOT in training pairs)" in out
    saved = read_report(run)
    assert saved.mode == "chat" and [c.label for c in saved.columns] == [
        "before (best)",
        "after (sft)",
    ]
    assert saved.trained.count(True) == 10 and saved.baseline is None
    assert run.checkpoint("sft").is_file() and sha(run.checkpoint("best")) == best
    assert run.read().sft.epochs == 2

    for extra in ([], ["--base"]):
        code = main(["chat", run.run_id, "Who is Romeo?", "--tokens", "5", "--seed", "1", *extra])
        out = capsys.readouterr().out
        assert code == 0 and out.endswith("\n") and "<|" not in out


def test_cli_sft_reports_bad_pairs_in_one_line(isolated_home, chat_cfg, tmp_path, capsys):
    make_run(isolated_home / "checkpoints", chat_cfg)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Who?", "answer": "Me."}\nnot json\n')
    assert main(["sft", "--pairs", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lal: error:") and "bad.jsonl line 2" in err and err.count("\n") == 1
