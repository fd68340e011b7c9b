"""Training: one run, from its set-up to its last checkpoint. Read it top to bottom.

    Trainer(request) / Trainer.resume(run)    a new run, or a stopped one from its saved state:
                                              its backend (the model), its corpus
    run_training():
        take the run's folder: one writer, its stop file watched, every event logged
        set up the backend (AdamW; a resume's weights, moments and random state back)
        RunStarted
        run_steps(backend, plan, stop):              the one loop, shared with fine-tuning
            while the plan goes on:
                what is due first: an eval (a new best is saved; early stopping), or an
                    epoch's end (fine-tuning)
                a stop request?                -> "stopped": what it learned is kept
                one optimisation step on the plan's next batch, at its learning rate
                a loss that is not finite?     -> "failed": nothing more is written
            the plan's last checkpoint (final; fine-tuning's sft), its records, RunFinished

Pre-training's plan, `Pretraining`, is the original write-up's recipe (docs/recipe.md,
Training): random windows of the train split at the scheduled learning rate (`lr_at`), an eval
every `evals_every` steps and at the end, the best checkpoint at each new best val loss, early
stopping after `patience` evals without one, and the resumable state (weights, AdamW's moments,
the random generators, `LoopState`) at every eval and on a stop. Fine-tuning's plan is
`lal_core.sft.tune.FineTuning`. On several ranks every rank runs this same loop on its rows of
each batch (`lal_core.backends.distributed`); rank 0 alone writes the folder and speaks.
"""

from __future__ import annotations

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
from lal_core.data.corpus import Corpus, check_corpus_fits, load_corpus, random_batch, val_windows
from lal_core.errors import LalError
from lal_core.model.cost import mfu
from lal_core.model.recipe import TrainConfig, lr_at
from lal_core.runs import events as ev
from lal_core.runs.checkpoints import STATE_FILE, save_state, save_weights
from lal_core.runs.events import EventCallback
from lal_core.runs.folder import RunDir, find_run, process_info
from lal_core.runs.records import CorpusInfo, EvalRecord, RunRecord
from lal_core.training.evals import evaluate
from lal_core.training.request import (
    LoopState,
    RunRequest,
    RunResult,
    resume_request,
    saved_state,
)


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
        # Kept in run.json, so a resumed run computes the same way (dtype, compile).
        self.backend_options = {k: v for k, v in request.backend_options.items() if v is not None}
        # The backend first: a missing device or framework is found before any file is written.
        self.backend = request.backend
        if not isinstance(self.backend, Backend):
            options = self.backend_options
            self.backend = make_backend(
                request.backend, model_cfg, seed=self.cfg.seed, device=device, **options
            )
        self.backend.use_ranks(ranks)
        corpus = request.data
        if not isinstance(corpus, Corpus):
            corpus = load_corpus(corpus, block_size=model_cfg.block_size)
        check_corpus_fits(corpus, model_cfg.block_size)
        self.corpus = corpus
        # As run.json records it, with the val tokens an eval scores.
        windows = val_windows(corpus.val, model_cfg.block_size, self.cfg.eval_tokens)
        self.corpus_info = CorpusInfo(
            **corpus.describe(), eval_tokens=len(windows) * model_cfg.block_size
        )
        self.request, self.run_id = request, run_id
        self.on_event = on_event or (lambda event: None)
        self.stop = stop or ev.StopRequest()
        self.run: RunDir | None = None  # the folder, once run_training has it
        self.saved: RunDir | None = None  # a resumed run's folder, its state to start from

    @classmethod
    def resume(
        cls,
        run: str | Path,
        *,
        runs_dir: Path | None = None,
        max_iters: int | None = None,
        micro_batch: int | None = None,
        device: str | None = None,
        ranks: Ranks | None = None,
        on_event: EventCallback | None = None,
        stop: ev.StopRequest | None = None,
    ) -> Trainer:
        """A trainer that continues `run` from its last saved state (`max_iters`, `device`,
        `micro_batch` and the ranks, where given, replace the run's: they change how it runs,
        not what it learns)."""
        ranks = ranks or Ranks()
        folder = find_run(str(run), runs_dir)
        changes = {"max_iters": max_iters, "micro_batch": micro_batch, "device": device}
        request = resume_request(folder, runs_dir, check_writer=ranks.main, **changes)
        trainer = cls(request, ranks=ranks, on_event=on_event, stop=stop)
        trainer.saved = folder
        return trainer

    def run_training(self) -> RunResult:
        """Take the run's folder (refused in one line if another process writes it), train,
        and let go of it; every event goes to the folder's log, then to `on_event`. On several
        ranks only rank 0 does this; the others take the same steps and evals beside it (the
        collectives need every rank), writing no file and saying nothing."""
        if not self.ranks.main:
            return self._train(None, lambda event: None)
        self.run = self._folder()
        with self.run.writing("train", self.stop, self.on_event) as emit:
            return self._train(self.run, emit)

    def _train(self, run: RunDir | None, emit: EventCallback) -> RunResult:
        weights, optimizer, state = self._begin(run)
        set_up(self.backend, self.cfg, emit, weights, optimizer)
        if run is not None:
            emit(self._started(run))
        plan = Pretraining(
            cfg=self.cfg,
            backend=self.backend,
            corpus=self.corpus,
            state=state,
            emit=emit,
            stop=AgreedStop(self.stop, self.ranks) if self.ranks.joined else self.stop,
            run=run,
            peak=peak_flops(self.backend, self.request.peak_tflops) if run else None,
        )
        end = run_steps(self.backend, plan, plan.stop)
        folder, best = run or self.saved, state.best_val if state.best_iter is not None else None
        return RunResult(
            folder.path if folder is not None else Path(),
            end.status,
            state.iteration,
            best,
            state.best_iter,
            end.message,
        )

    def _folder(self) -> RunDir:
        """The run's folder: the resumed one, or a new one."""
        if self.saved is not None:
            return self.saved
        b = self.backend
        try:
            return RunDir.create(b.cfg.name, b.name, self.request.runs_dir, self.run_id)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise LalError(f"cannot create the run folder: {exc.strerror or exc}{where}") from None

    def _begin(self, run: RunDir | None) -> tuple[dict | None, dict | None, LoopState]:
        """Where the run starts: a resume's saved weights, optimizer and loop state (else none
        and a fresh LoopState); and run.json, a new run's or the resumed run's marked running
        again, its log cut back to the saved state (no run folder: a rank other than 0)."""
        ranks = {"world_size": self.ranks.world}
        ranks["micro_per_rank"] = self.micro if self.ranks.world > 1 else None
        if self.saved is None:
            if run is not None:
                b = self.backend
                run.write(
                    RunRecord(
                        run_id=run.run_id,
                        model_config=b.cfg,
                        created=time.time(),
                        train_config=self.cfg,
                        backend=b.name,
                        device=b.device,
                        backend_options=self.backend_options,
                        **ranks,
                        n_params=b.num_parameters(),
                        data=self.corpus_info,
                        status="running",
                        process=process_info(),
                    )
                )
            return None, None, LoopState()
        weights, optimizer, state = saved_state(self.saved, self.backend.cfg)
        if run is not None:
            run.begin_again(state.iteration, state.evaluated, train_config=self.cfg, **ranks)
        return weights, optimizer, state

    def _started(self, run: RunDir) -> ev.RunStarted:
        """RunStarted, with the header line: run, config, device, fast paths, data, ranks."""
        corpus, b, whole = self.corpus_info, self.backend, len(self.corpus.val) - 1
        whole -= whole % b.cfg.block_size
        scored = "" if corpus.eval_tokens == whole else f", {corpus.eval_tokens:,} per eval"
        fast = f"{b.describe()} | " if b.describe() else ""
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
    backend: Backend,
    cfg: TrainConfig,
    emit: EventCallback,
    weights: dict | None = None,
    optimizer: dict | None = None,
) -> None:
    """The backend's training set-up, `backend.setup_training(cfg)` (AdamW), said first when it
    will take a while (compiling), then a resumed run's weights and optimizer state."""
    notice = backend.preparing()
    if notice:
        emit(ev.Preparing(line=notice))
    backend.setup_training(cfg)
    if weights is not None:
        backend.load_state_dict(weights)
        backend.load_optimizer_state(optimizer)


def peak_flops(backend: Backend, peak_tflops: float | None) -> float | None:
    """FLOP/s for MFU: the user's --peak-tflops, else the backend's default for its device;
    times the ranks, as the tokens/s it is set against are all the ranks' together."""
    peak = peak_tflops * 1e12 if peak_tflops else backend.peak_flops()
    return peak * backend.ranks.world if peak else peak


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
        """What is due before the next step (an eval, an epoch's end); the run's status when it
        is over ("completed", "early_stopped"), None to take the step."""

    @abstractmethod
    def next_step(self) -> Step:
        """The next batch and its learning rate."""

    @abstractmethod
    def after_step(self, step: Step, loss: float, seconds: float) -> None:
        """Record a step that went well."""

    @abstractmethod
    def failure(self, step: Step, loss: float) -> str:
        """The step's loss or gradient was not finite: record it; the reason, in one line."""

    @abstractmethod
    def finish(self, status: str) -> Path | None:
        """The run is over, not failed: keep what it learned, write its last checkpoint
        (returned) and its records, say so."""

    def save_checkpoint(self, kind: str, **meta: Any) -> Path:
        """The weights as the run's `kind` checkpoint, written whole or not at all, and
        announced (CheckpointSaved)."""
        assert self.run is not None, "a plan without a run folder writes no checkpoint"
        path = self.run.checkpoint(kind)
        save_weights(path, self.backend.state_dict(), self.backend.cfg, meta)
        self.emit(ev.CheckpointSaved(iteration=self.iteration, kind=kind, path=path))
        return path


def run_steps(backend: Backend, plan: Plan, stop: ev.StopRequest | AgreedStop) -> LoopEnd:
    """Take the plan's steps until it is over, a stop is requested or a loss is not finite."""
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


class Clock:
    """Seconds since a run started, earlier sessions of a resumed run included."""

    def __init__(self, before: float = 0.0) -> None:
        self._start = time.perf_counter() - before

    def __call__(self) -> float:
        return time.perf_counter() - self._start


def format_elapsed(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


# -- pre-training's plan: the recipe ---------------------------------------------------------
@dataclass
class Pretraining(Plan):
    """Pre-training's plan: random batches at the scheduled lr; an eval every `evals_every`
    steps (and at the end) with the best checkpoint, the resumable state and early stopping;
    the state again on a stop; run.json throughout. Its events, steps and evals among them,
    reach metrics.jsonl through the run's event log."""

    cfg: TrainConfig
    backend: Backend
    corpus: Corpus
    state: LoopState
    emit: EventCallback
    stop: ev.StopRequest | AgreedStop  # also abandons an eval in progress
    run: RunDir | None = None  # None: a rank other than 0, which writes nothing
    peak: float | None = None

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
        t0 = time.perf_counter()
        losses = evaluate(self.backend, self.corpus, cfg, self.stop.is_set)
        if losses is None:
            return None
        record = self.record_eval(*losses, seconds=time.perf_counter() - t0)
        if record.is_best and self.run is not None:
            self.save_checkpoint("best", iteration=it)
        state.evaluated = True
        self.save_state()
        if self.run is not None:
            self.run.update(iteration=it, best_val=state.best_val, best_iter=state.best_iter)
        util = mfu(record.tokens_per_sec, self.backend.cfg, self.peak)
        line = eval_line(record, util)
        best = {"best_val": state.best_val, "best_iter": state.best_iter}
        self.emit(ev.EvalDone.from_record(record, **best, line=line, mfu=util))
        self.step_seconds, self.step_tokens = 0.0, 0
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

    def record_eval(self, train_loss: float, val_loss: float, seconds: float) -> EvalRecord:
        """Fold an eval into the state (best val, the patience counter); its record."""
        state, it = self.state, self.state.iteration
        is_best = val_loss < state.best_val
        if is_best:
            state.best_val, state.best_iter, state.bad_evals = val_loss, it, 0
        else:
            state.bad_evals += 1
        return EvalRecord(
            iteration=it,
            train_loss=train_loss,
            val_loss=val_loss,
            lr=lr_at(it, self.cfg),
            is_best=is_best,
            tokens_per_sec=self.step_tokens / self.step_seconds if self.step_seconds else 0.0,
            elapsed=self.clock(),
            eval_seconds=seconds,
        )

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
        words = {
            "completed": f"finished {self.cfg.max_iters} iterations",
            "early_stopped": "stopped early",
            "stopped": "stopped on request",
        }[status]
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


def eval_line(record: EvalRecord, mfu: float | None = None) -> str:
    """The original write-up's log line, plus throughput:
    `iter 250  | train 4.5904  | val 5.1055  | lr 2.99e-04 | 5,210 tok/s (31% MFU) | 2.1 min *`."""
    r = record
    util = f" ({mfu:.0%} MFU)" if mfu is not None and r.tokens_per_sec else ""
    return (
        f"iter {r.iteration:<4} | train {r.train_loss:<7.4f} | val {r.val_loss:<7.4f} | "
        f"lr {r.lr:.2e} | {r.tokens_per_sec:,.0f} tok/s{util} | {format_elapsed(r.elapsed)}"
        f"{' *' if r.is_best else ''}"
    )


def train(request: RunRequest, **options: Any) -> RunResult:
    """Train a model to early stop or max_iters; `options` are `Trainer`'s (run_id, ranks,
    on_event, stop)."""
    return Trainer(request, **options).run_training()
