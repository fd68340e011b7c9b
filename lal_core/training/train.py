"""Training: one run, from its set-up to its last checkpoint. Read it top to bottom.

    Trainer(request) / Trainer.resume(run)     the backend (the model), the corpus; a resume's
                                               saved state
    run_training():  the folder taken (one writer; its stop file watched; every event logged)
        run.json, the backend set up (AdamW; a resume's weights and moments back), RunStarted
        run_steps(plan, stop):                 the one loop, shared with fine-tuning
            what is due first: an eval (a new best saved; early stopping), an epoch's end
            a stop request?               -> "stopped": what it learned is kept
            one optimisation step on the plan's next batch, at its learning rate
            a loss that is not finite?    -> "failed": nothing more is written
        the plan's last checkpoint (final; fine-tuning's sft), its records, RunFinished

Pre-training's plan, `Pretraining`, is the recipe (docs/recipe.md, Training): evals, the best
checkpoint, early stopping, the resumable state. Fine-tuning's is `lal_core.sft.tune.FineTuning`.
On several ranks every rank runs this same loop on its rows of each batch
(`lal_core.backends.distributed`); rank 0 alone writes the folder and speaks.
"""

from __future__ import annotations

import contextlib
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lal_core.backends import make_backend
from lal_core.backends.base import Backend
from lal_core.backends.distributed import AgreedStop, Ranks
from lal_core.data.corpus import Corpus, random_batch
from lal_core.model.cost import mfu
from lal_core.model.recipe import TrainConfig, lr_at
from lal_core.runs import events as ev
from lal_core.runs.checkpoints import STATE_FILE, save_state, save_weights
from lal_core.runs.events import EventCallback
from lal_core.runs.folder import RunDir
from lal_core.runs.records import EvalRecord
from lal_core.training.evals import average_val_loss, evaluate, val_bits_per_byte
from lal_core.training.request import (
    Clock,
    LoopState,
    RunRequest,
    RunResult,
    SavedRun,
    eval_line,
    format_elapsed,
    resume_request,
)
from lal_core.training.samples import EvalSamples


# -- the run: a new one or a resumed one, set up ------------------------------------------------
class Trainer:
    """One training run. Build it, then `run_training()`; `stop.set()` from another thread ends
    it after the step in progress. `Trainer.resume(run)` continues a stopped or interrupted run."""

    def __init__(
        self,
        request: RunRequest,
        *,
        run_id: str | None = None,  # the new run folder's name (None: a fresh one)
        ranks: Ranks | None = None,  # one of several data-parallel ranks, or one process
        on_event: EventCallback | None = None,
        stop: ev.StopRequest | None = None,
    ) -> None:
        model_cfg, self.cfg = request.model_config.validate(), request.train_config.validate()
        self.ranks = ranks = ranks or Ranks()
        self.micro = self.cfg.micro_per_rank(ranks.world)  # a batch that does not split: refused
        device = ranks.device if ranks.device.startswith("cuda") else request.device
        # The backend first: a missing device or framework is found before any file is written.
        self.backend = request.backend
        if not isinstance(self.backend, Backend):
            options = request.backend_options
            self.backend = make_backend(
                request.backend, model_cfg, seed=self.cfg.seed, device=device, **options
            )
        self.backend.use_ranks(ranks)
        # The stop request; on several ranks one they agree on, at the same step.
        self.stop = stop or ev.StopRequest()
        self.agreed_stop = AgreedStop(self.stop, ranks) if ranks.joined else self.stop
        # MFU's peak FLOP/s, for rank 0 to report: the user's, else the device's.
        self.peak = self.backend.training_peak(request.peak_tflops) if ranks.main else None
        self.corpus, self.corpus_info = request.corpus()
        self.request, self.run_id = request, run_id
        self.on_event = on_event or (lambda event: None)
        self.run: RunDir | None = None  # the folder, once run_training has it
        self.saved: SavedRun | None = None  # a resumed run: its folder and saved state

    @classmethod
    def resume(
        cls,
        run: str | Path,
        *,
        runs_dir: Path | None = None,
        ranks: Ranks | None = None,
        on_event: EventCallback | None = None,
        stop: ev.StopRequest | None = None,
        **changes: Any,
    ) -> Trainer:
        """A trainer that continues `run` from its last saved state; `changes` (max_iters,
        micro_batch, device), where given, replace the run's, as the ranks do: they change how
        it runs, not what it learns."""
        ranks = ranks or Ranks()
        request, saved = resume_request(run, runs_dir, check_writer=ranks.main, **changes)
        trainer = cls(request, ranks=ranks, on_event=on_event, stop=stop)
        trainer.saved = saved
        return trainer

    def run_training(self) -> RunResult:
        """Take the run's folder (refused in one line if another process writes it), train,
        and let go of it; every event goes to the folder's log, then to `on_event`. On several
        ranks only rank 0 does this; the others take the same steps and evals beside it (the
        collectives need every rank), writing no file and saying nothing."""
        b, saved, several = self.backend, self.saved, self.ranks.world > 1
        # What run.json says of how this session trains: its recipe and its ranks.
        fields = {"train_config": self.cfg, "world_size": self.ranks.world}
        fields["micro_per_rank"] = self.micro if several else None
        run = saved.run if saved is not None else None
        if self.ranks.main and run is None:
            run = RunDir.create(b.cfg.name, b.name, self.request.runs_dir, self.run_id)
        self.run = run if self.ranks.main else None
        writing = self.run.writing("train", self.stop, self.on_event) if self.run else None
        with writing or contextlib.nullcontext(lambda event: None) as emit:
            state = saved.state if saved is not None else LoopState()
            if self.run is not None and saved is not None:  # its log cut back to the state
                self.run.begin_again(state.iteration, state.evaluated, **fields)
            elif self.run is not None:
                self.run.write(
                    self.request.new_record(self.run.run_id, b, self.corpus_info, fields)
                )
            set_up(b, self.cfg, emit, saved)
            samples = None  # drawn after each eval, by rank 0 alone
            if self.run is not None:
                emit(self._started(self.run))
                samples = EvalSamples.for_pretraining(b, self.corpus, self.cfg, self.stop)
            plan = Pretraining(
                cfg=self.cfg,
                backend=b,
                corpus=self.corpus,
                state=state,
                emit=emit,
                stop=self.agreed_stop,
                run=self.run,
                peak=self.peak,
                samples=samples,
                bpb=val_bits_per_byte(self.corpus, b.cfg.block_size, self.cfg),
            )
            end = run_steps(plan, plan.stop)
        return RunResult.of(run.path if run else Path(), end.status, state, end.message)

    def _started(self, run: RunDir) -> ev.RunStarted:
        """RunStarted, with the header line: run, config, device, fast paths, data, ranks."""
        corpus, b, whole = self.corpus_info, self.backend, len(self.corpus.val) - 1
        whole -= whole % b.cfg.block_size
        scored = "" if corpus.eval_tokens == whole else f", {corpus.eval_tokens:,} per eval"
        fast = f"{described} | " if (described := b.describe()) else ""
        header = (
            f"run {run.run_id} | config {b.cfg.name} ({b.num_parameters() / 1e6:.2f}M params) | "
            f"Device: {b.name}/{b.device} | {fast}data {self.corpus.path.name} "
            f"({corpus.train_tokens:,} train / {corpus.val_tokens:,} val tokens{scored})"
            f"{self.ranks.describe(self.micro)}"
        )
        return run_started(
            run, b, "train", self.cfg.max_iters, header, train_config=self.cfg, corpus=corpus
        )


def set_up(
    backend: Backend, cfg: TrainConfig, emit: EventCallback, saved: SavedRun | None = None
) -> None:
    """The backend's training set-up, `backend.setup_training(cfg)` (AdamW), said first when it
    will take a while (compiling), then a resumed run's weights and optimizer state."""
    notice = backend.preparing()
    if notice:
        emit(ev.Preparing(line=notice))
    backend.setup_training(cfg)
    if saved is not None:
        backend.load_state_dict(saved.weights)
        backend.load_optimizer_state(saved.optimizer)


def run_started(
    run: RunDir, backend: Backend, kind: str, max_steps: int, header: str, **more: Any
) -> ev.RunStarted:
    """The RunStarted event of a run of `kind` ("train" or "sft") on this backend."""
    return ev.RunStarted(
        run_id=run.run_id,
        run_dir=run.path,
        kind=kind,
        model_config=backend.cfg,
        backend=backend.name,
        device=backend.device,
        n_params=backend.num_parameters(),
        max_steps=max_steps,
        header=header,
        **more,
    )


# -- the one loop, for pre-training and fine-tuning ----------------------------------------------
@dataclass(frozen=True)
class Step:
    """One optimisation step to take: its batch (int64 (B, T), -1 targets ignored) and lr."""

    iteration: int
    x: np.ndarray
    y: np.ndarray
    lr: float


@dataclass(frozen=True)
class LoopEnd:
    status: str  # "completed", "early_stopped", "stopped" or "failed"
    elapsed: float
    message: str = ""  # why it failed
    output: Path | None = None  # the last checkpoint, if one was written


class Plan(ABC):
    """What one kind of training decides; `run_steps` does the rest: the stop request, the rule
    for a loss that is not finite (the loop writes nothing more: every checkpoint on disk is
    from before the failure), timing and the step events."""

    iteration: int = 0  # the next step's number (so far: the steps taken)
    backend: Backend  # what it trains
    emit: EventCallback  # where its events go
    clock: Clock  # the run's elapsed time
    run: RunDir | None = None  # the folder it writes (None: it writes none)
    peak: float | None = None  # the device's peak FLOP/s, for the MFU figure

    @abstractmethod
    def before_step(self) -> str | None:
        """What is due first (an eval, an epoch's end); the status once over, else None."""

    @abstractmethod
    def next_step(self) -> Step:
        """The next batch and its learning rate."""

    @abstractmethod
    def after_step(self, step: Step, loss: float, seconds: float) -> None:
        """Record a step that went well."""

    @abstractmethod
    def failure(self, step: Step, loss: float) -> str:
        """A loss or gradient that is not finite: record it; the reason, in one line."""

    @abstractmethod
    def finish(self, status: str) -> Path | None:
        """Over, not failed: keep what it learned, its last checkpoint (returned), say so."""

    def save_checkpoint(self, kind: str, **meta: Any) -> Path:
        """The weights as the run's `kind` checkpoint, written whole or not at all, and
        announced (CheckpointSaved)."""
        assert self.run is not None, "a plan without a run folder writes no checkpoint"
        path = self.run.checkpoint(kind)
        save_weights(path, self.backend.state_dict(), self.backend.cfg, meta)
        self.emit(ev.CheckpointSaved(iteration=self.iteration, kind=kind, path=path))
        return path


def run_steps(plan: Plan, stop: ev.StopRequest | AgreedStop) -> LoopEnd:
    """Take the plan's steps until it is over, a stop is requested or a loss is not finite."""
    backend = plan.backend
    while (status := plan.before_step()) is None:
        if stop.is_set():
            status = "stopped"
            break
        step = plan.next_step()
        t0 = time.perf_counter()
        loss = backend.train_step(step.x, step.y, step.lr)  # the backend refuses a bad update
        seconds = time.perf_counter() - t0
        if not math.isfinite(loss):
            message = plan.failure(step, loss)
            run_dir = plan.run.path if plan.run is not None else None
            plan.emit(ev.RunFailed(message=message, run_dir=run_dir, iteration=step.iteration))
            return LoopEnd("failed", plan.clock(), message)
        plan.after_step(step, loss, seconds)
        tok_s = step.x.size / seconds if seconds > 0 else 0.0
        plan.emit(
            ev.StepDone(
                iteration=step.iteration,
                loss=loss,
                lr=step.lr,
                tokens_per_sec=tok_s,
                elapsed=plan.clock(),
                mfu=mfu(tok_s, backend.cfg, plan.peak),
            )
        )
    output = plan.finish(status)
    return LoopEnd(status, plan.clock(), output=output)


# -- pre-training's plan: the recipe ---------------------------------------------------------
@dataclass
class Pretraining(Plan):
    """Pre-training's plan: random train windows at the scheduled lr (`lr_at`); an eval every
    `evals_every` steps and at the end: the best checkpoint (the weights, or their ema average
    where it scores lower), the resumable state, samples (`training.samples`), early stopping
    after `patience` evals without a new best; the state again on a stop; run.json throughout."""

    cfg: TrainConfig
    backend: Backend
    corpus: Corpus
    state: LoopState
    emit: EventCallback
    stop: ev.StopRequest | AgreedStop  # also abandons an eval in progress
    run: RunDir | None = None  # None: a rank other than 0, which writes nothing
    peak: float | None = None
    samples: EvalSamples | None = None  # drawn after each eval (None: none, or not rank 0)
    bpb: float = 0.0  # val loss in bits per byte, for each nat per token

    def __post_init__(self) -> None:
        self.clock = Clock(self.state.elapsed)
        self.rng = np.random.default_rng(self.cfg.seed)  # the batches'
        if self.state.batch_rng is not None:
            self.rng.bit_generator.state = self.state.batch_rng
        self.step_seconds, self.step_tokens = 0.0, 0  # since the last eval, for its tokens/s

    @property
    def iteration(self) -> int:
        return self.state.iteration

    def before_step(self) -> str | None:
        it, cfg = self.state.iteration, self.cfg
        due = it % cfg.evals_every == 0 or it >= cfg.max_iters
        if due and not self.state.evaluated:
            ended = self.eval_and_stop_early()
            if ended is None:  # abandoned for a stop request, which the loop now takes
                return None
            if ended:
                return "early_stopped"
        return "completed" if it >= cfg.max_iters else None

    def eval_and_stop_early(self) -> bool | None:
        """The eval at this iteration: record it, keep a new best, save the resumable state;
        True when val loss has not improved for `patience` evals. None: a stop request came
        during the eval, which was dropped (a resume runs it again)."""
        state, cfg, it = self.state, self.cfg, self.state.iteration
        t0, b, stop = time.perf_counter(), self.backend, self.stop.is_set
        losses = evaluate(b, self.corpus, cfg, stop)
        # With an ema decay the weights' average is scored too; the better of the two counts.
        ema = average_val_loss(b, self.corpus, cfg, stop) if cfg.ema and losses else None
        if losses is None or (cfg.ema and ema is None):
            return None
        averaged = ema is not None and ema < losses[1]
        record = EvalRecord(
            iteration=it,
            train_loss=losses[0],
            val_loss=losses[1],
            lr=lr_at(it, cfg),
            is_best=state.new_best(ema if averaged else losses[1]),  # else one more bad eval
            tokens_per_sec=self.step_tokens / self.step_seconds if self.step_seconds else 0.0,
            elapsed=self.clock(),
            eval_seconds=time.perf_counter() - t0,
            val_bpb=losses[1] * self.bpb,
            ema_val_loss=ema,
        )
        if record.is_best and self.run is not None:
            with b.averaged_weights(swap=averaged):  # the weights that scored it
                self.save_checkpoint("best", iteration=it, averaged=averaged)
        state.evaluated = True
        self.save_state()
        best = {"best_val": state.best_val, "best_iter": state.best_iter}
        if self.run is not None:
            self.run.update(iteration=it, **best, best_bpb=state.best_val * self.bpb)
        util = mfu(record.tokens_per_sec, self.backend.cfg, self.peak)
        line = eval_line(record, util)
        self.emit(ev.EvalDone.from_record(record, **best, line=line, mfu=util))
        self.step_seconds, self.step_tokens = 0.0, 0
        if self.samples is not None:  # what it writes now, streamed; a stop ends them at once
            self.samples.draw(it, self.emit)
        if state.bad_evals < cfg.patience:
            return False
        self.emit(
            ev.EarlyStopped(
                iteration=it,
                patience=cfg.patience,
                **best,
                line=f"early stop: no val improvement for {cfg.patience} evals "
                f"(best @ iter {state.best_iter}: {state.best_val:.4f})",
            )
        )
        return True

    def save_state(self) -> None:
        """The resumable state: weights, optimizer and random generators, and `LoopState`."""
        self.state.elapsed = self.clock()
        self.state.batch_rng = self.rng.bit_generator.state
        if self.run is not None:
            b = self.backend
            path = self.run.path / STATE_FILE
            save_state(path, b.state_dict(), b.optimizer_state(), b.cfg, self.state.to_dict())

    def next_step(self) -> Step:
        it, cfg = self.state.iteration, self.cfg
        block = self.backend.cfg.block_size
        x, y = random_batch(self.corpus.train, cfg.batch_size, block, self.rng)
        return Step(iteration=it, x=x, y=y, lr=lr_at(it, cfg))

    def after_step(self, step: Step, loss: float, seconds: float) -> None:
        self.step_seconds += seconds
        self.step_tokens += step.x.size
        self.state.iteration, self.state.evaluated = step.iteration + 1, False

    def failure(self, step: Step, loss: float) -> str:
        message = (
            f"loss or gradient became {loss} at iter {step.iteration}; the best checkpoint "
            f"(iter {self.state.best_iter}) is kept and the run can resume from its last "
            "eval; try a lower --lr"
        )
        if self.run is not None:
            self.run.update(status="failed", error=message, iteration=self.state.iteration)
        return message

    def finish(self, status: str) -> Path | None:
        state, it = self.state, self.state.iteration
        if status == "stopped":
            self.save_state()
        if self.run is None:
            return None
        final = self.save_checkpoint("final", iteration=it)
        best = state.best_val if state.best_iter is not None else None
        self.run.update(status=status, iteration=it, best_val=best, best_iter=state.best_iter)
        words = {"early_stopped": "stopped early", "stopped": "stopped on request"}.get(
            status, f"finished {self.cfg.max_iters} iterations"
        )
        elapsed = self.clock()
        self.emit(
            ev.RunFinished(
                status=status,
                iteration=it,
                best_val=best,
                best_iter=state.best_iter,
                run_dir=self.run.path,
                elapsed=elapsed,
                line=f"{words} at iter {it} in {format_elapsed(elapsed)}; best val "
                f"{state.best_val:.4f} @ iter {state.best_iter}; checkpoints in {self.run.path}",
            )
        )
        return final


def train(request: RunRequest, **options: Any) -> RunResult:
    """Train to early stop or max_iters; `options`: Trainer's (run_id, ranks, on_event, stop)."""
    return Trainer(request, **options).run_training()
