"""Supervised fine-tuning (SFT): turn a base checkpoint into a (very small) chat assistant.

The lesson, shown honestly: fifty examples teach the *format*, not the *facts*. After five
epochs on ten question-answer pairs (each repeated five times) the model has learned that after
`<|assistant|>` comes a short answer closed by `<|end|>`; what it writes inside that answer is
still Shakespeare-flavoured text from pre-training, rarely the right answer, and never for a
question it was not shown. Knowledge comes from pre-training; SFT only teaches how to reply.

The chat format (plain text: r50k_base has no such special tokens, so each marker is several
ordinary BPE tokens):

    prompt = "<|system|>You are a helpful assistant trained on Shakespeare.<|end|>\\n"
             "<|user|>QUESTION<|end|>\\n"
             "<|assistant|>"
    answer = "ANSWER<|end|>"

No space after `<|assistant|>` and none before the closing `<|end|>`; one newline between turns.
The prompt and the answer are encoded separately and joined, so the answer's tokens are the
same whichever prompt precedes it, and generation encodes exactly the same prompt.

Training counts the loss only on the answer: every target that is a prompt token is -1, the
answer's tokens and its closing `<|end|>` are counted (that is what lets generation stop).
Batches are padded on the right to the longest example, with ignored targets. An example longer
than the context is cut from the left (the answer is kept, as generation crops its context
from the left too), with a warning. A batch with no counted target is skipped and reported:
its mean loss would be 0/0.

The loop calls only `Backend` methods, so it runs on every backend. Its recipe: AdamW from
`Backend.setup_training` (betas 0.9/0.95, weight decay 0.1, clipping at 1.0) at a constant
lr of 3e-4 (pre-training's peak; with only 65 steps a lower one barely moves a small model),
batch 4, 5 epochs, the examples shuffled each epoch with the seed. The masked loss of an epoch
is the mean, over its counted tokens, of each batch's loss before its step.
"""

from __future__ import annotations

import json
import math
import textwrap
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np

from lal_core.backends import Backend, make_backend
from lal_core.checkpoint import load_weights, save_weights
from lal_core.config import TrainConfig
from lal_core.errors import CheckpointError, ConfigError, DataError
from lal_core.events import (
    CheckpointSaved,
    Event,
    RunFailed,
    RunFinished,
    RunStarted,
    SFTEpochDone,
    StepDone,
    StopRequest,
)
from lal_core.runs import RunDir, find_run, summarize
from lal_core.sampling import check_sampling_args, generate_ids, load_for_sampling
from lal_core.tokenizer import EOT_TOKEN, StreamDecoder, encode
from lal_core.trainer import setup_training

SYSTEM_MARK, USER_MARK, ASSISTANT_MARK, END_MARK = (
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
)
SYSTEM_LINE = "You are a helpful assistant trained on Shakespeare."
BUILTIN_PAIRS_PATH = Path(__file__).with_name("sft_pairs.jsonl")
BUILTIN_REPEAT = 5  # ten pairs, five times each: 50 examples
HELD_OUT_QUESTION = "Who is Juliet?"  # not in the training pairs: the before/after shows it

DEFAULT_EPOCHS = 5
DEFAULT_LR = 3e-4
DEFAULT_BATCH_SIZE = 4
DEFAULT_SEED = 1337
PAD_TOKEN = EOT_TOKEN  # what padded inputs hold; their targets are -1, so it never counts

EventCallback = Callable[[Event], None]


class SFTWarning(UserWarning):
    """Something SFT changed in the data (an example cut to fit the context)."""


# -- data ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str


@dataclass(frozen=True)
class Example:
    """One tokenised chat example: the whole sequence, of which the first n_prompt are prompt.

    The model reads ids[:-1] and predicts ids[1:]; a prediction counts in the loss only when
    the token it predicts is an answer token (position >= n_prompt).
    """

    ids: tuple[int, ...]
    n_prompt: int
    question: str = ""
    answer: str = ""
    cut: int = 0  # tokens dropped from the left to fit the context

    @property
    def tokens(self) -> list[int]:
        """The model's inputs."""
        return list(self.ids[:-1])

    @property
    def targets(self) -> list[int]:
        """The next token at each input position, or -1 where that token is prompt."""
        return [t if i + 1 >= self.n_prompt else -1 for i, t in enumerate(self.ids[1:])]

    @property
    def n_counted(self) -> int:
        return max(len(self.ids) - max(self.n_prompt, 1), 0)


def chat_prompt(question: str) -> str:
    """The prompt the model answers: system line, user turn, and the assistant marker."""
    return (
        f"{SYSTEM_MARK}{SYSTEM_LINE}{END_MARK}\n{USER_MARK}{question.strip()}{END_MARK}\n"
        f"{ASSISTANT_MARK}"
    )


def chat_answer(answer: str) -> str:
    """The text the model learns to write after the prompt: the answer and the closing marker."""
    return f"{answer.strip()}{END_MARK}"


def load_pairs(path: str | Path) -> list[QAPair]:
    """Question-answer pairs from JSON lines `{"question": ..., "answer": ...}`.

    Blank lines are skipped; any other line that is not such an object is a one-line
    `DataError` naming its line number.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"pairs file not found: {path}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise DataError(f"cannot read pairs file {path}: {exc.strerror}") from None
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where} is not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f'{where} is not a JSON object like {{"question": ..., "answer": ...}}')
        for key in ("question", "answer"):
            value = obj.get(key)
            if not isinstance(value, str) or not value.strip():
                raise DataError(f'{where} needs a non-empty string "{key}"')
        pairs.append(QAPair(obj["question"].strip(), obj["answer"].strip()))
    if not pairs:
        raise DataError(f"{path} holds no question-answer pairs")
    return pairs


def builtin_pairs() -> list[QAPair]:
    """The ten question-answer pairs about Shakespeare's plays written for this project."""
    return load_pairs(BUILTIN_PAIRS_PATH)


def make_example(pair: QAPair, block_size: int | None = None) -> Example:
    """Tokenise one pair; longer than block_size + 1 tokens, it is cut from the left."""
    prompt, answer = encode(chat_prompt(pair.question)), encode(chat_answer(pair.answer))
    ids, n_prompt, cut = prompt + answer, len(prompt), 0
    if block_size is not None and len(ids) > block_size + 1:
        cut = len(ids) - (block_size + 1)
        ids, n_prompt = ids[cut:], max(n_prompt - cut, 0)
    return Example(tuple(ids), n_prompt, pair.question, pair.answer, cut)


def make_examples(
    pairs: Sequence[QAPair], block_size: int, repeat: int = BUILTIN_REPEAT
) -> list[Example]:
    """Each pair `repeat` times, tokenised; warns (SFTWarning) if any had to be cut."""
    if repeat < 1:
        raise ConfigError(f"repeat must be at least 1, got {repeat}")
    once = [make_example(p, block_size) for p in pairs]
    cut = [e for e in once if e.cut]
    if cut:
        longest = max(cut, key=lambda e: e.cut)
        warnings.warn(
            f"{len(cut)} of {len(once)} pairs are longer than the model's context "
            f"({block_size} tokens) and were cut from the left, e.g. {longest.question!r} "
            f"({len(longest.ids) + longest.cut} tokens)",
            SFTWarning,
            stacklevel=2,
        )
    return [e for _ in range(repeat) for e in once]


def token_mask(example: Example | QAPair, block_size: int | None = None) -> list[tuple[str, bool]]:
    """For the dashboard: each token of an example with its text and whether it counts.

    A token counts when the model is trained to predict it (an answer token or the closing
    marker). The texts joined give the example's text; a multi-byte character shows on the
    token that completes it (earlier pieces are '').
    """
    if isinstance(example, QAPair):
        example = make_example(example, block_size)
    decoder = StreamDecoder()
    out = [(decoder.push(t), i >= max(example.n_prompt, 1)) for i, t in enumerate(example.ids)]
    tail = decoder.flush()
    if tail and out:
        out[-1] = (out[-1][0] + tail, out[-1][1])
    return out


def make_batch(examples: Sequence[Example]) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets (B, T) for T the longest example; padding is ignored (-1)."""
    T = max(len(e.ids) - 1 for e in examples)
    x = np.full((len(examples), T), PAD_TOKEN, dtype=np.int64)
    y = np.full((len(examples), T), -1, dtype=np.int64)
    for row, e in enumerate(examples):
        n = len(e.ids) - 1
        x[row, :n] = e.tokens
        y[row, :n] = e.targets
    return x, y


# -- training --------------------------------------------------------------------------------
@dataclass
class SFTResult:
    status: str  # "completed", "stopped" or "failed"
    losses: list[float]  # masked loss of each finished epoch
    steps: int
    skipped_batches: int
    cut_examples: int  # distinct pairs cut to fit the context
    elapsed: float
    message: str = ""
    checkpoint: Path | None = None
    backend: Backend | None = field(default=None, repr=False)  # holds the fine-tuned weights


def _nothing(event: Event) -> None:
    pass


def fine_tune(
    backend: Backend,
    examples: Sequence[Example],
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    seed: int = DEFAULT_SEED,
    on_event: EventCallback | None = None,
    stop: StopRequest | None = None,
) -> SFTResult:
    """Train `backend` in place on the examples, the loss on answer tokens only.

    Emits StepDone per batch and SFTEpochDone per epoch (masked loss: the mean over the
    epoch's counted tokens of the loss each batch had before its step); a stop request ends
    the run between batches. Returns how it went; saving is the caller's (see `run_sft`).
    """
    emit = on_event or _nothing
    if epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}")
    if batch_size < 1:
        raise ConfigError(f"batch-size must be at least 1, got {batch_size}")
    if not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"lr must be a positive number, got {lr}")
    if not examples:
        raise DataError("no examples to fine-tune on")
    if sum(e.n_counted for e in examples) == 0:
        raise DataError("no example has an answer token to train on")
    block = backend.cfg.block_size
    too_long = [e for e in examples if len(e.ids) - 1 > block]
    if too_long:
        raise DataError(
            f"{len(too_long)} examples are longer than the context ({block} tokens); "
            "build them with make_examples(..., block_size)"
        )

    setup_training(
        backend, TrainConfig(batch_size=batch_size, lr=lr, warmup_iters=0, seed=seed), emit
    )
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    losses: list[float] = []
    step = skipped_total = 0
    status = "completed"
    cut = len({(e.question, e.answer) for e in examples if e.cut})
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(examples))
        total, counted, skipped = 0.0, 0, 0
        for start in range(0, len(order), batch_size):
            if stop is not None and stop.is_set():
                status = "stopped"
                break
            x, y = make_batch([examples[i] for i in order[start : start + batch_size]])
            n = int((y != -1).sum())
            if n == 0:
                skipped += 1
                continue
            t0 = time.perf_counter()
            loss = backend.train_step(x, y, lr)
            dt = time.perf_counter() - t0
            if not math.isfinite(loss):
                message = (
                    f"SFT loss became {loss} at step {step} (epoch {epoch}); "
                    "nothing was saved; try a lower --lr"
                )
                emit(RunFailed(message=message, iteration=step))
                elapsed = time.perf_counter() - started
                return SFTResult(
                    "failed", losses, step, skipped_total + skipped, cut, elapsed, message
                )
            total += loss * n
            counted += n
            tok_s = x.size / dt if dt else 0.0
            emit(StepDone(step, loss, lr, tok_s, time.perf_counter() - started))
            step += 1
        skipped_total += skipped
        if status == "stopped" and counted == 0:
            break
        masked = total / counted
        losses.append(masked)
        elapsed = time.perf_counter() - started
        line = (
            f"sft epoch {epoch}/{epochs} | masked loss {masked:.4f} | "
            f"{len(examples)} examples | {_format_elapsed(elapsed)}"
        )
        if status == "stopped":
            line += " | stopped early in this epoch"
        if skipped:
            line += f" | skipped {skipped} batch{'es' if skipped > 1 else ''} with no answer tokens"
        emit(SFTEpochDone(epoch, epochs, masked, skipped, elapsed, line))
        if status == "stopped":
            break
    elapsed = time.perf_counter() - started
    return SFTResult(status, losses, step, skipped_total, cut, elapsed)


def _format_elapsed(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def run_sft(
    run: str | Path | RunDir | None = None,
    pairs: str | Path | Sequence[QAPair] | None = None,
    repeat: int | None = None,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    seed: int = DEFAULT_SEED,
    backend: str = "torch",
    device: str | None = None,
    runs_root: Path | None = None,
    on_event: EventCallback | None = None,
    stop: StopRequest | None = None,
) -> SFTResult:
    """Fine-tune a run's best checkpoint and save `sft.safetensors` into the run folder.

    `run`: a run id, folder or RunDir (None: the newest run). `pairs`: a JSON-lines file or a
    list of pairs (None: the built-in ten). `repeat`: copies of each pair (default 5 for the
    built-in pairs, 1 for a user's). best/final are only read; run.json gets an `sft` entry.
    """
    emit = on_event or _nothing
    rundir = (
        run if isinstance(run, RunDir) else find_run(None if run is None else str(run), runs_root)
    )
    if summarize(rundir).status == "running":
        raise CheckpointError(f"run {rundir.run_id} is still training; wait for it to finish")
    base_path = rundir.checkpoint("best")
    if not base_path.is_file():
        raise CheckpointError(f"run {rundir.run_id} has no best checkpoint to fine-tune")
    if pairs is None:
        qa, source = builtin_pairs(), "built-in"
        repeat = BUILTIN_REPEAT if repeat is None else repeat
    elif isinstance(pairs, (str, Path)):
        qa, source = load_pairs(pairs), str(pairs)
        repeat = 1 if repeat is None else repeat
    else:
        qa, source = list(pairs), "given"
        repeat = 1 if repeat is None else repeat
    tensors, cfg = load_weights(base_path)
    model = make_backend(backend, cfg, seed=seed, device=device)
    model.load_state_dict(tensors)
    examples = make_examples(qa, cfg.block_size, repeat)
    settings = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "pairs": source,
        "n_pairs": len(qa),
        "examples": len(examples),
    }
    header = (
        f"sft {rundir.run_id} | from best.safetensors | {len(examples)} examples "
        f"({len(qa)} pairs x {repeat}) | {epochs} epochs | lr {lr:g} constant | "
        f"batch {batch_size} | Device: {model.name}/{model.device}"
    )
    emit(
        RunStarted(
            rundir.run_id,
            rundir.path,
            cfg.to_dict(),
            settings,
            model.name,
            model.device,
            model.num_parameters(),
            {"pairs": source, "n_pairs": len(qa), "examples": len(examples)},
            header,
        )
    )
    result = fine_tune(model, examples, epochs, batch_size, lr, seed, emit, stop)
    result.backend = model
    if result.status == "failed":
        return result
    path = rundir.checkpoint("sft")
    save_weights(path, model.state_dict(), cfg, {"sft": settings, "base": "best"})
    result.checkpoint = path
    emit(CheckpointSaved(iteration=result.steps, kind="sft", path=path))
    rundir.update(
        sft={
            **settings,
            "status": result.status,
            "epochs_done": len(result.losses),
            "losses": result.losses,
            "steps": result.steps,
            "skipped_batches": result.skipped_batches,
            "cut_examples": result.cut_examples,
            "backend": model.name,
            "device": model.device,
            "elapsed": result.elapsed,
            "finished": time.time(),
        }
    )
    last = f"{result.losses[-1]:.4f}" if result.losses else "-"
    words = "finished" if result.status == "completed" else "stopped on request after"
    line = (
        f"sft {words} {len(result.losses)} epochs in {_format_elapsed(result.elapsed)}; "
        f"masked loss {last}; saved {path}"
    )
    emit(RunFinished(result.status, result.steps, None, None, rundir.path, result.elapsed, line))
    return result


# -- chat ------------------------------------------------------------------------------------
@dataclass
class ChatAnswer:
    text: str  # the answer, without the prompt or the closing marker, stripped
    ended: bool  # the model wrote <|end|> (else it hit the token limit)
    tokens: int  # tokens generated, the marker's included


def _held_back(text: str) -> int:
    """How many characters at the end of `text` could be the start of the end marker."""
    for n in range(min(len(END_MARK) - 1, len(text)), 0, -1):
        if END_MARK.startswith(text[-n:]):
            return n
    return 0


def _answer_pieces(
    backend: Backend,
    question: str,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    seed: int | None,
    stop: StopRequest | None,
    state: dict[str, Any],
) -> Iterator[str]:
    check_sampling_args(temperature, top_k, max_new_tokens)
    if not question.strip():
        raise ConfigError("the question is empty")
    decoder = StreamDecoder()
    text, shown = "", 0
    state.update(ended=False, tokens=0)
    ids = generate_ids(
        backend, encode(chat_prompt(question)), max_new_tokens, temperature, top_k, seed, stop=stop
    )
    for token, _prob in ids:
        state["tokens"] += 1
        text += decoder.push(token)
        end = text.find(END_MARK, max(shown - len(END_MARK), 0))
        if end >= 0:
            state["ended"] = True
            if end > shown:
                yield text[shown:end]
            return
        safe = len(text) - _held_back(text)
        if safe > shown:
            yield text[shown:safe]
            shown = safe
    text += decoder.flush()
    if len(text) > shown:
        yield text[shown:]


def stream_answer(
    backend: Backend,
    question: str,
    max_new_tokens: int = 100,
    temperature: float = 0.8,
    top_k: int | None = 50,
    seed: int | None = None,
    stop: StopRequest | None = None,
) -> Iterator[str]:
    """Answer a question in the chat format, yielding answer text as it is written.

    Generation stops when the text contains `<|end|>` (found in the decoded text: the marker
    is several tokens) or at max_new_tokens; the marker itself is never yielded (text that
    might be its beginning is held back until it is clearly not).
    """
    yield from _answer_pieces(backend, question, max_new_tokens, temperature, top_k, seed, stop, {})


def chat(
    backend: Backend,
    question: str,
    max_new_tokens: int = 100,
    temperature: float = 0.8,
    top_k: int | None = 50,
    seed: int | None = None,
    stop: StopRequest | None = None,
) -> ChatAnswer:
    """The whole answer, and whether the model closed it with `<|end|>`."""
    state: dict[str, Any] = {}
    pieces = _answer_pieces(
        backend, question, max_new_tokens, temperature, top_k, seed, stop, state
    )
    text = "".join(pieces)
    return ChatAnswer(text.strip(), state["ended"], state["tokens"])


def answer(
    backend: Backend,
    question: str,
    max_new_tokens: int = 100,
    temperature: float = 0.8,
    top_k: int | None = 50,
    seed: int | None = None,
) -> str:
    """The answer text only (stripped), without the prompt or the end marker."""
    return chat(backend, question, max_new_tokens, temperature, top_k, seed).text


# -- before and after ------------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    question: str
    trained: bool  # the question is one of the training pairs
    base: ChatAnswer
    tuned: ChatAnswer


def compare(
    base: Backend,
    tuned: Backend,
    questions: Sequence[str] | None = None,
    trained_questions: Sequence[str] | None = None,
    max_new_tokens: int = 60,
    temperature: float = 0.8,
    top_k: int | None = 50,
    seed: int | None = DEFAULT_SEED,
) -> list[Comparison]:
    """The same questions answered by the base and the fine-tuned model, same seed for both.

    Default questions: the built-in training questions and one held-out question.
    """
    if trained_questions is None:
        trained_questions = [p.question for p in builtin_pairs()]
    if questions is None:
        questions = [*trained_questions, HELD_OUT_QUESTION]
    known = {q.strip() for q in trained_questions}
    rows = []
    for q in questions:
        args = (q, max_new_tokens, temperature, top_k, seed)
        rows.append(Comparison(q, q.strip() in known, chat(base, *args), chat(tuned, *args)))
    return rows


def compare_run(
    run: str | Path | RunDir | None = None,
    questions: Sequence[str] | None = None,
    backend: str = "torch",
    device: str | None = None,
    runs_root: Path | None = None,
    **kwargs: Any,
) -> list[Comparison]:
    """`compare` for a run folder: its best checkpoint against its sft checkpoint."""
    rundir = (
        run if isinstance(run, RunDir) else find_run(None if run is None else str(run), runs_root)
    )
    models = []
    for kind in ("best", "sft"):
        path = rundir.checkpoint(kind)
        if not path.is_file():
            if kind == "sft":
                raise CheckpointError(
                    f"run {rundir.run_id} has no fine-tuned checkpoint; run first: "
                    f"lal sft {rundir.run_id}"
                )
            raise CheckpointError(f"run {rundir.run_id} has no best checkpoint")
        models.append(load_for_sampling(path, backend, device))
    trained = kwargs.pop("trained_questions", None)
    if trained is None:
        sft_info = rundir.read().get("sft", {})
        if sft_info.get("pairs") not in (None, "built-in", "given"):
            try:
                trained = [p.question for p in load_pairs(sft_info["pairs"])]
            except DataError:
                trained = None
    return compare(models[0], models[1], questions, trained, **kwargs)


def format_comparison(rows: Sequence[Comparison], width: int = 100) -> str:
    """Before and after side by side: a column for the base model, one for the fine-tuned."""
    col = max((width - 3) // 2, 20)

    def cell(a: ChatAnswer) -> list[str]:
        shown = a.text.replace("\n", " / ") or "(nothing)"
        shown += "  [<|end|>]" if a.ended else "  [no <|end|>]"
        return textwrap.wrap(shown, col) or [""]

    lines = [f"{'before (best.safetensors)':<{col}} | after (sft.safetensors)", "-" * (2 * col + 3)]
    for r in rows:
        tag = "in training pairs" if r.trained else "NOT in training pairs"
        lines.append(f"Q: {r.question}  ({tag})")
        for left, right in zip_longest(cell(r.base), cell(r.tuned), fillvalue=""):
            lines.append(f"{left:<{col}} | {right}".rstrip())
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
