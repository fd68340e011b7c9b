"""Pre-training's part of the step loop (`lal_core.loop`): the SPEC's recipe.

    for it in 0 .. max_iters:
        every evals_every steps (and at the end): eval train/val, keep the best, maybe stop
            early (a stop request abandons the eval: the run stops at the step before it)
        one optimisation step on a random batch at lr_at(it)

`PreTraining` is the job: random batches at the scheduled learning rate, the eval cadence,
early stopping, the best checkpoint, the resumable state (`LoopState`), metrics.jsonl and
run.json. `lal_core.trainer.Trainer` sets a run up and hands it here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lal_core import data as data_mod
from lal_core import events as ev
from lal_core.backends import Backend
from lal_core.config import TrainConfig, eval_batch_size
from lal_core.flops import mfu
from lal_core.loop import Checkpoints, Clock, EventCallback, Job, Step, format_elapsed, peak_flops
from lal_core.records import EvalRecord
from lal_core.runs import RunDir
from lal_core.schedule import lr_at


def eval_line(record: EvalRecord, mfu: float | None = None) -> str:
    """The SPEC's log line, plus throughput: `iter 250  | train 4.5904  | val 5.1055  | ...`."""
    r = record
    util = f" ({mfu:.0%} MFU)" if mfu is not None and r.tokens_per_sec else ""
    return (
        f"iter {r.iteration:<4} | train {r.train_loss:<7.4f} | val {r.val_loss:<7.4f} | "
        f"lr {r.lr:.2e} | {r.tokens_per_sec:,.0f} tok/s{util} | {format_elapsed(r.elapsed)}"
        f"{' *' if r.is_best else ''}"
    )


def evaluate(
    backend: Backend,
    corpus: data_mod.Corpus,
    cfg: TrainConfig,
    stop: Callable[[], bool] | None = None,
) -> tuple[float, float] | None:
    """(train loss, val loss): val over the val split's eval windows (all of it, or at most
    cfg.eval_tokens spread evenly over it), train over as many windows spread evenly over the
    train split. Deterministic. None when `stop()` turned true on the way: the eval was
    abandoned."""
    block = backend.cfg.block_size
    val_starts = data_mod.val_windows(corpus.val, block, cfg.eval_tokens)
    train_starts = data_mod.eval_windows(corpus.train, block, count=len(val_starts))
    batch = eval_batch_size(backend.cfg, cfg.micro_per_rank(backend.ranks.world))
    train = window_loss(backend, corpus.train, train_starts, batch, stop)
    if train is None:
        return None
    val = window_loss(backend, corpus.val, val_starts, batch, stop)
    return None if val is None else (train, val)


def window_loss(
    backend: Backend,
    split: np.ndarray,
    starts: np.ndarray,
    batch_size: int,
    stop: Callable[[], bool] | None = None,
) -> float | None:
    """The mean loss over the windows of `split` that start at `starts` (each counts the same);
    None if `stop()` turns true between two rounds of batches. On several ranks each round's
    windows are split across them and their losses summed: the same mean as one process."""
    ranks, block_size = backend.ranks, backend.cfg.block_size
    total, per_round = 0.0, batch_size * ranks.world
    for i in range(0, len(starts), per_round):
        if stop is not None and stop():
            return None
        chunk = starts[i : i + per_round]
        share = -(-len(chunk) // ranks.world)  # rows per rank, the last rank's fewer or none
        mine = chunk[ranks.rank * share : (ranks.rank + 1) * share]
        for x, y in data_mod.window_batches(split, mine, block_size, batch_size):
            total += backend.eval_loss(x, y) * len(x)
    return ranks.sum([total])[0] / len(starts)


@dataclass
class LoopState:
    """Where pre-training is: enough, with the weights and optimizer, to resume exactly."""

    iteration: int = 0  # the next step to take
    evaluated: bool = False  # whether the eval at `iteration` has already run
    best_val: float = math.inf
    best_iter: int | None = None
    bad_evals: int = 0  # evals since the last new best (early-stopping counter)
    elapsed: float = 0.0  # seconds of earlier sessions of this run
    batch_rng: dict | None = None  # numpy's bit-generator state for the batch sampler

    def to_dict(self) -> dict:
        best = self.best_val if math.isfinite(self.best_val) else None
        return {**self.__dict__, "best_val": best}

    @classmethod
    def from_dict(cls, data: dict) -> LoopState:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        state = cls(**known)
        state.best_val = math.inf if state.best_val is None else float(state.best_val)
        return state


class PreTraining(Job):
    """Pre-training's part of the step loop: random batches at the scheduled lr; an eval every
    `cfg.evals_every` steps (and at the end) with the best checkpoint, the resumable state and
    early stopping; the state again on a stop; run.json throughout. (Its events, steps and
    evals among them, reach metrics.jsonl through the run's event log.)"""

    def __init__(
        self,
        cfg: TrainConfig,
        backend: Backend,
        corpus: data_mod.Corpus,
        run: RunDir | None,
        state: LoopState,
        emit: EventCallback,
        peak_tflops: float | None = None,
        stop: ev.StopRequest | None = None,
    ) -> None:
        self.cfg, self.model_cfg = cfg, backend.cfg
        self.stop = stop or ev.StopRequest()  # abandons an eval in progress
        self.backend, self.corpus, self.emit = backend, corpus, emit
        # No run folder: a rank other than 0 of a distributed run, which writes nothing.
        self.run, self.state = run, state
        self.checkpoints = Checkpoints(run, backend, emit) if run is not None else None
        self.peak = peak_flops(backend, peak_tflops)
        self.clock = Clock(state.elapsed)
        self.rng = np.random.default_rng(self.cfg.seed)
        if state.batch_rng is not None:
            self.rng.bit_generator.state = state.batch_rng
        self.step_seconds, self.step_tokens = 0.0, 0  # since the last eval, for its tokens/s

    @property
    def iteration(self) -> int:
        return self.state.iteration

    def snapshot(self) -> None:
        self.state.elapsed = self.clock()
        self.state.batch_rng = self.rng.bit_generator.state
        if self.checkpoints is not None:
            self.checkpoints.save_state(self.state.to_dict())

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
        train_loss, val_loss = losses
        record = self.record_eval(train_loss, val_loss, time.perf_counter() - t0)
        if record.is_best and self.checkpoints is not None:
            self.checkpoints.save("best", it, {"iteration": it})
        state.evaluated = True
        self.snapshot()
        if self.run is not None:
            self.run.update(iteration=it, best_val=state.best_val, best_iter=state.best_iter)
        util = mfu(record.tokens_per_sec, self.model_cfg, self.peak)
        self.emit(
            ev.EvalDone.from_record(
                record,
                best_val=state.best_val,
                best_iter=state.best_iter,
                line=eval_line(record, util),
                mfu=util,
            )
        )
        self.step_seconds, self.step_tokens = 0.0, 0
        if state.bad_evals < cfg.patience:
            return False
        self.emit(
            ev.EarlyStopped(
                iteration=it,
                best_iter=state.best_iter,
                best_val=state.best_val,
                patience=cfg.patience,
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

    def next_step(self) -> Step:
        it, cfg = self.state.iteration, self.cfg
        x, y = data_mod.random_batch(
            self.corpus.train, cfg.batch_size, self.model_cfg.block_size, self.rng
        )
        return Step(iteration=it, x=x, y=y, lr=lr_at(it, cfg))

    def step_done(self, step: Step, loss: float, seconds: float) -> None:
        self.step_seconds += seconds
        self.step_tokens += step.x.size
        self.state.iteration, self.state.evaluated = step.iteration + 1, False

    def stopped(self) -> None:
        self.snapshot()

    def failed(self, step: Step, loss: float) -> str:
        return (
            f"loss or gradient became {loss} at iter {step.iteration}; the best checkpoint "
            f"(iter {self.state.best_iter}) is kept and the run can resume from its last "
            "eval; try a lower --lr"
        )

    def output(self) -> tuple[str, dict[str, Any]]:
        return "final", {"iteration": self.state.iteration}

    def finish(self, status: str, message: str = "") -> None:
        state, it = self.state, self.state.iteration
        if self.run is None:
            return
        if status == "failed":
            self.run.update(status="failed", error=message, iteration=it)
            return
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
