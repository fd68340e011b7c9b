"""Fine-tuning: a run's best checkpoint trained on chat examples, the loss on answers only.

The lesson, shown honestly: fifty examples teach the *format*, not the *facts*. After five
epochs on ten question-answer pairs (each repeated five times) the model has learned that after
`<|assistant|>` comes a short answer closed by `<|end|>`; what it writes inside that answer is
still Shakespeare-flavoured text from pre-training, rarely the right answer, and never for a
question it was not shown. Knowledge comes from pre-training; SFT only teaches how to reply.

The steps run through the same loop as pre-training (`lal_core.training.train.run_steps`):
one place for stop requests, a non-finite loss, timing and step events. What is SFT's own is
`FineTuning`, its plan: its batches (chat examples with masked targets, `chat_format`), its
epochs and the masked loss of each (SFTEpochDone) with two answers drawn then (a training
question and a held-out one, streamed as an eval's samples are: `training.samples`, so the
format is watched as it emerges), its constant lr, no evals or early stop, and its output:
`sft.safetensors` alone (best and final stay as they were) and the `sft` entry of run.json.

Its recipe: AdamW from `Backend.setup_training` (betas 0.9/0.95, weight decay 0.1, clipping at
1.0) at a constant lr of 3e-4 (pre-training's peak; with only 65 steps a lower one barely moves
a small model), batch 4, 5 epochs, the examples shuffled each epoch with the seed. The masked
loss of an epoch is the mean, over its counted tokens, of each batch's loss before its step. A
batch with no counted target is skipped and reported: its mean loss would be 0/0.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from lal_core.backends import Backend, make_backend
from lal_core.errors import CheckpointError, ConfigError, DataError
from lal_core.generation.controls import Controls
from lal_core.model.recipe import TrainConfig
from lal_core.runs import events as ev
from lal_core.runs.checkpoints import load_weights
from lal_core.runs.events import EventCallback
from lal_core.runs.folder import RunDir, find_run
from lal_core.runs.records import SFTRecord
from lal_core.sft.chat import answer_controls, closed
from lal_core.sft.chat_format import (
    BUILTIN_REPEAT,
    DEFAULT_SEED,
    HELD_OUT_QUESTIONS,
    Example,
    QAPair,
    builtin_pairs,
    chat_prompt,
    load_pairs,
    make_batch,
    make_examples,
)
from lal_core.training.request import Clock, format_elapsed
from lal_core.training.samples import EvalSamples
from lal_core.training.train import (
    Plan,
    Step,
    run_started,
    run_steps,
    set_up,
)

DEFAULT_EPOCHS = 5
DEFAULT_LR = 3e-4
DEFAULT_BATCH_SIZE = 4
ANSWER_TOKENS = 60  # per answer drawn at an epoch's end, as `lal report`'s chat mode


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


@dataclass(frozen=True)
class SFTSettings:
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    lr: float = DEFAULT_LR
    seed: int = DEFAULT_SEED
    micro_batch: int = 0  # examples per forward pass (0: the whole batch); see TrainConfig

    def validate(self) -> SFTSettings:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch-size must be at least 1, got {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        self.train_config()  # a micro batch that does not divide the batch: one line
        return self

    def train_config(self) -> TrainConfig:
        """The recipe the step loop runs: a constant lr, no warmup, no average of the weights
        (a fine-tune keeps its last weights)."""
        return TrainConfig(
            batch_size=self.batch_size,
            micro_batch=self.micro_batch,
            lr=self.lr,
            warmup_iters=0,
            seed=self.seed,
            ema=0.0,
        ).validate()


class FineTuning(Plan):
    """SFT's plan for the step loop: epochs of shuffled chat batches at a constant lr, the
    masked loss per epoch; with a run folder, sft.safetensors, its `sft` record and RunFinished
    at the end."""

    def __init__(
        self,
        examples: Sequence[Example],
        settings: SFTSettings,
        emit: EventCallback,
        *,
        run: RunDir | None = None,  # where sft.safetensors goes (None: nothing is written)
        record: SFTRecord | None = None,  # with `run`: what run.json's `sft` will say
        backend: Backend | None = None,  # what it trains (with `run`: whose weights are saved)
        samples: EvalSamples | None = None,  # answers drawn at each epoch's end (None: none)
    ) -> None:
        self.examples, self.settings, self.emit = examples, settings, emit
        self.run, self.record, self.backend = run, record, backend
        self.samples = samples
        self.rng = np.random.default_rng(settings.seed)
        self.clock = Clock()
        self.iteration = 0
        self.epoch, self.order, self.cursor = 0, np.zeros(0, dtype=np.int64), 0
        self.total, self.counted, self.skipped = 0.0, 0, 0  # this epoch's
        self.losses: list[float] = []
        self.skipped_total = 0
        self.batch: tuple[np.ndarray, np.ndarray, int] | None = None
        self.cut = len({(e.question, e.answer) for e in examples if e.cut})

    def before_step(self) -> str | None:
        """Find the next batch with a counted target; at an epoch's end report it and shuffle
        for the next; after the last epoch the run is completed."""
        size = self.settings.batch_size
        while True:
            while self.cursor < len(self.order):
                chosen = self.order[self.cursor : self.cursor + size]
                self.cursor += size
                x, y = make_batch([self.examples[i] for i in chosen])
                n = int((y != -1).sum())
                if n:
                    self.batch = (x, y, n)
                    return None
                self.skipped += 1
            if self.epoch:
                self.end_epoch()
            if self.epoch == self.settings.epochs:
                return "completed"
            self.epoch += 1
            self.order, self.cursor = self.rng.permutation(len(self.examples)), 0

    def end_epoch(self, stopped: bool = False) -> None:
        masked = self.total / self.counted
        self.losses.append(masked)
        elapsed, epochs = self.clock(), self.settings.epochs
        line = (
            f"sft epoch {self.epoch}/{epochs} | masked loss {masked:.4f} | "
            f"{len(self.examples)} examples | {format_elapsed(elapsed)}"
        )
        if stopped:
            line += " | stopped early in this epoch"
        if self.skipped:
            s = self.skipped
            line += f" | skipped {s} batch{'es' if s > 1 else ''} with no answer tokens"
        self.emit(
            ev.SFTEpochDone(
                epoch=self.epoch,
                epochs=epochs,
                masked_loss=masked,
                skipped_batches=self.skipped,
                elapsed=elapsed,
                line=line,
            )
        )
        self.skipped_total += self.skipped
        self.total, self.counted, self.skipped = 0.0, 0, 0
        if self.samples is not None and not stopped:
            self.samples.draw(self.iteration, self.emit)

    def next_step(self) -> Step:
        assert self.batch is not None
        x, y, _ = self.batch
        return Step(iteration=self.iteration, x=x, y=y, lr=self.settings.lr)

    def after_step(self, step: Step, loss: float, seconds: float) -> None:
        assert self.batch is not None
        n = self.batch[2]
        self.total += loss * n
        self.counted += n
        self.iteration += 1

    def failure(self, step: Step, loss: float) -> str:
        self.skipped_total += self.skipped  # a failed fine-tune writes nothing
        return (
            f"SFT loss became {loss} at step {step.iteration} (epoch {self.epoch}); "
            "nothing was saved; try a lower --lr"
        )

    def finish(self, status: str) -> Path | None:
        if status == "stopped" and self.counted:  # the epoch in progress, as far as it went
            self.end_epoch(stopped=True)
        self.skipped_total += self.skipped
        if self.run is None or self.record is None:
            return None
        meta = {k: getattr(self.record, k) for k in _SETTINGS_KEYS}
        saved = self.save_checkpoint("sft", sft=meta, base="best")
        elapsed = self.clock()
        self.record = _finished(self.record, status, self, elapsed)
        self.run.update(sft=self.record)
        last = f"{self.losses[-1]:.4f}" if self.losses else "-"
        words = "finished" if status == "completed" else "stopped on request after"
        line = (
            f"sft {words} {len(self.losses)} epochs in {format_elapsed(elapsed)}; "
            f"masked loss {last}; saved {saved}"
        )
        self.emit(
            ev.RunFinished(
                status=status,
                iteration=self.iteration,
                best_val=None,
                best_iter=None,
                run_dir=self.run.path,
                elapsed=elapsed,
                line=line,
            )
        )
        return saved


_SETTINGS_KEYS = ("epochs", "batch_size", "lr", "seed", "pairs", "n_pairs", "examples")


def _finished(record: SFTRecord, status: str, job: FineTuning, elapsed: float) -> SFTRecord:
    return replace(
        record,
        status=status,
        epochs_done=len(job.losses),
        losses=tuple(job.losses),
        steps=job.iteration,
        skipped_batches=job.skipped_total,
        cut_examples=job.cut,
        elapsed=elapsed,
        finished=time.time(),
    )


def _check_examples(examples: Sequence[Example], block_size: int) -> None:
    if not examples:
        raise DataError("no examples to fine-tune on")
    if sum(e.n_counted for e in examples) == 0:
        raise DataError("no example has an answer token to train on")
    too_long = [e for e in examples if len(e.ids) - 1 > block_size]
    if too_long:
        raise DataError(
            f"{len(too_long)} examples are longer than the context ({block_size} tokens); "
            "build them with make_examples(..., block_size)"
        )


def _tune(job: FineTuning, stop: ev.StopRequest | None) -> SFTResult:
    """The fine-tune's steps through the one loop, on the plan's backend."""
    set_up(job.backend, job.settings.train_config(), job.emit)
    end = run_steps(job, stop or ev.StopRequest())
    return SFTResult(
        status=end.status,
        losses=job.losses,
        steps=job.iteration,
        skipped_batches=job.skipped_total,
        cut_examples=job.cut,
        elapsed=end.elapsed,
        message=end.message,
        checkpoint=end.output,
        backend=job.backend,
    )


def fine_tune(
    backend: Backend,
    examples: Sequence[Example],
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    seed: int = DEFAULT_SEED,
    on_event: EventCallback | None = None,
    stop: ev.StopRequest | None = None,
    micro_batch: int = 0,
) -> SFTResult:
    """Train `backend` in place on the examples, the loss on answer tokens only; writes no
    file (see `run_sft`). Emits StepDone per batch and SFTEpochDone per epoch; a stop request
    ends the run between batches."""
    settings = SFTSettings(epochs, batch_size, lr, seed, micro_batch).validate()
    _check_examples(examples, backend.cfg.block_size)
    job = FineTuning(examples, settings, on_event or (lambda event: None), backend=backend)
    return _tune(job, stop)


def _pairs(pairs, repeat: int | None) -> tuple[list[QAPair], str, int]:
    """(pairs, their source for run.json, copies of each) from `run_sft`'s arguments."""
    if pairs is None:
        return builtin_pairs(), "built-in", BUILTIN_REPEAT if repeat is None else repeat
    if isinstance(pairs, (str, Path)):
        return load_pairs(pairs), str(pairs), 1 if repeat is None else repeat
    return list(pairs), "given", 1 if repeat is None else repeat


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
    stop: ev.StopRequest | None = None,
    micro_batch: int = 0,
) -> SFTResult:
    """Fine-tune a run's best checkpoint and save `sft.safetensors` into the run folder.

    `run`: a run id, folder or RunDir (None: the newest run). `pairs`: a JSON-lines file or a
    list of pairs (None: the built-in ten). `repeat`: copies of each pair (default 5 for the
    built-in pairs, 1 for a user's). best/final are only read; run.json gets an `sft` entry.
    """
    settings = SFTSettings(epochs, batch_size, lr, seed, micro_batch).validate()
    rundir = find_run(run, runs_root)
    stop = stop or ev.StopRequest()
    # refused in one line while the run trains (or fine-tunes)
    with rundir.writing("sft", stop, on_event) as emit:
        model = _base_model(rundir, backend, device, seed)
        return _fine_tune_run(rundir, model, settings, _pairs(pairs, repeat), emit, stop)


def _fine_tune_run(
    rundir: RunDir,
    model: Backend,
    settings: SFTSettings,
    pairs: tuple[list[QAPair], str, int],
    emit: EventCallback,
    stop: ev.StopRequest,
) -> SFTResult:
    qa, source, repeat = pairs
    examples = make_examples(qa, model.cfg.block_size, repeat)
    _check_examples(examples, model.cfg.block_size)
    record = SFTRecord(
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        seed=settings.seed,
        pairs=source,
        n_pairs=len(qa),
        examples=len(examples),
        backend=model.name,
        device=model.device,
    )
    s = settings
    header = (
        f"sft {rundir.run_id} | from best.safetensors | {len(examples)} examples "
        f"({len(qa)} pairs x {repeat}) | {s.epochs} epochs | lr {s.lr:g} constant | "
        f"batch {s.batch_size} | Device: {model.name}/{model.device}"
    )
    steps = s.epochs * math.ceil(len(examples) / s.batch_size)
    emit(run_started(rundir, model, "sft", steps, header))
    samples = answer_samples(model, qa, settings.seed, stop)
    job = FineTuning(
        examples, settings, emit, run=rundir, record=record, backend=model, samples=samples
    )
    return _tune(job, stop)


def answer_samples(
    model: Backend, pairs: Sequence[QAPair], seed: int, stop: ev.StopRequest
) -> EvalSamples:
    """The answers drawn at each epoch's end: to the first training question and to a
    held-out one, in the chat format, up to an end marker (counted as closed) or ANSWER_TOKENS."""
    trained = pairs[0].question
    held_out = next(q for q in HELD_OUT_QUESTIONS if q not in {p.question for p in pairs})
    questions = [trained, held_out]
    return EvalSamples(
        backend=model,
        prompts=[f"Q: {q}\nA:" for q in questions],
        model_prompts=[chat_prompt(q) for q in questions],
        tokens=ANSWER_TOKENS,
        seed=seed,
        controls=answer_controls(Controls()),
        stop=stop,
        closes=closed,
    )


def _base_model(rundir: RunDir, backend: str, device: str | None, seed: int) -> Backend:
    """A backend holding the run's best checkpoint."""
    base_path = rundir.checkpoint("best")
    if not base_path.is_file():
        raise CheckpointError(f"run {rundir.run_id} has no best checkpoint to fine-tune")
    tensors, cfg = load_weights(base_path)
    model = make_backend(backend, cfg, seed=seed, device=device)
    model.load_state_dict(tensors)
    return model
