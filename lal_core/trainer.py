"""The training loop, written once for every backend.

    for it in 0 .. max_iters:
        every eval_interval (and at the end): eval train/val, keep the best, maybe stop early
        one optimisation step at lr_at(it)

The backend does the framework work (a step, an eval batch, weights in and out); this module
owns the recipe: batches, schedule, eval cadence, early stopping, checkpoints, metrics, events
and the stop request.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lal_core import data as data_mod
from lal_core.backends import Backend, make_backend
from lal_core.checkpoint import save_weights
from lal_core.config import ModelConfig, TrainConfig
from lal_core.errors import LalError
from lal_core.events import (
    CheckpointSaved,
    EarlyStopped,
    EvalDone,
    Event,
    RunFailed,
    RunFinished,
    RunStarted,
    StepDone,
    StopRequest,
)
from lal_core.runs import RunDir, process_info
from lal_core.schedule import lr_at

EventCallback = Callable[[Event], None]


def format_elapsed(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def eval_line(
    it: int, train: float, val: float, lr: float, tok_s: float, elapsed: float, best: bool
) -> str:
    """The SPEC's log line, plus throughput: `iter 250  | train 4.5904  | val 5.1055  | ...`."""
    return (
        f"iter {it:<4} | train {train:<7.4f} | val {val:<7.4f} | lr {lr:.2e} | "
        f"{tok_s:,.0f} tok/s | {format_elapsed(elapsed)}{' *' if best else ''}"
    )


@dataclass
class RunResult:
    run_dir: Path
    status: str
    iteration: int
    best_val: float | None
    best_iter: int | None


def evaluate(backend: Backend, corpus: data_mod.Corpus, block_size: int, batch_size: int):
    """(train loss, val loss): val over the whole val split in fixed, non-overlapping windows,
    train over the same number of windows spread evenly over the train split. Deterministic."""
    val_starts = data_mod.eval_windows(corpus.val, block_size)
    train_starts = data_mod.eval_windows(corpus.train, block_size, count=len(val_starts))
    losses = []
    for split, starts in ((corpus.train, train_starts), (corpus.val, val_starts)):
        total, count = 0.0, 0
        for x, y in data_mod.window_batches(split, starts, block_size, batch_size):
            total += backend.eval_loss(x, y) * len(x)
            count += len(x)
        losses.append(total / count)
    return losses[0], losses[1]


class Trainer:
    """One training run. Build it, then `run()`; `stop.set()` from another thread ends it early."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        train_cfg: TrainConfig,
        backend: str | Backend = "torch",
        device: str | None = None,
        data: str | Path | data_mod.Corpus | None = None,
        runs_root: Path | None = None,
        on_event: EventCallback | None = None,
        stop: StopRequest | None = None,
    ) -> None:
        self.model_cfg = model_cfg.validate()
        self.cfg = train_cfg.validate()
        self.corpus = data if isinstance(data, data_mod.Corpus) else data_mod.load_corpus(data)
        data_mod.check_corpus_fits(self.corpus, model_cfg.block_size)
        if isinstance(backend, Backend):
            self.backend = backend
        else:
            self.backend = make_backend(backend, model_cfg, seed=train_cfg.seed, device=device)
        self.on_event = on_event or (lambda event: None)
        self.stop = stop or StopRequest()
        self.runs_root = runs_root
        self.run: RunDir | None = None

    def _emit(self, event: Event) -> None:
        self.on_event(event)

    def _save(self, kind: str, iteration: int) -> None:
        assert self.run is not None
        path = self.run.checkpoint(kind)
        save_weights(path, self.backend.state_dict(), self.model_cfg, {"iteration": iteration})
        self._emit(CheckpointSaved(iteration=iteration, kind=kind, path=path))

    def run_training(self) -> RunResult:
        cfg, mcfg, backend = self.cfg, self.model_cfg, self.backend
        self.run = run = RunDir.create(mcfg.name, backend.name, self.runs_root)
        info = {
            "format_version": 1,
            "run_id": run.run_id,
            "created": time.time(),
            "model_config": mcfg.to_dict(),
            "train_config": cfg.to_dict(),
            "backend": backend.name,
            "device": backend.device,
            "n_params": backend.num_parameters(),
            "data": self.corpus.describe(),
            "iteration": 0,
            "best_val": None,
            "best_iter": None,
            "status": "running",
            "process": process_info(),
        }
        run.write(info)
        header = (
            f"run {run.run_id} | config {mcfg.name} "
            f"({backend.num_parameters() / 1e6:.2f}M params) | "
            f"Device: {backend.name}/{backend.device} | data {self.corpus.path.name} "
            f"({len(self.corpus.train):,} train / {len(self.corpus.val):,} val tokens)"
        )
        self._emit(
            RunStarted(
                run.run_id,
                run.path,
                mcfg.to_dict(),
                cfg.to_dict(),
                backend.name,
                backend.device,
                backend.num_parameters(),
                self.corpus.describe(),
                header,
            )
        )
        try:
            return self._loop(run)
        except BaseException as exc:
            message = str(exc) if isinstance(exc, LalError) else f"{type(exc).__name__}: {exc}"
            if isinstance(exc, KeyboardInterrupt):
                message = "interrupted"
            run.update(status="failed", error=message)
            self._emit(RunFailed(message=message, run_dir=run.path))
            raise

    def _loop(self, run: RunDir) -> RunResult:
        cfg, T, backend = self.cfg, self.model_cfg.block_size, self.backend
        backend.setup_training(cfg)
        rng = np.random.default_rng(cfg.seed)
        best_val, best_iter, bad_evals = math.inf, None, 0
        status, it = "completed", 0
        started = time.perf_counter()
        step_seconds, step_tokens = 0.0, 0  # since the last eval, for its tokens/s
        tokens_per_step = cfg.batch_size * T
        pending: list[dict] = []

        for it in range(cfg.max_iters + 1):
            if it % cfg.eval_interval == 0 or it == cfg.max_iters:
                t0 = time.perf_counter()
                train_loss, val_loss = evaluate(backend, self.corpus, T, cfg.batch_size)
                eval_seconds = time.perf_counter() - t0
                is_best = val_loss < best_val
                if is_best:
                    best_val, best_iter, bad_evals = val_loss, it, 0
                else:
                    bad_evals += 1
                tok_s = step_tokens / step_seconds if step_seconds else 0.0
                elapsed = time.perf_counter() - started
                lr = lr_at(it, cfg)
                line = eval_line(it, train_loss, val_loss, lr, tok_s, elapsed, is_best)
                pending.append(
                    {
                        "type": "eval",
                        "iter": it,
                        "train_loss": train_loss,
                        "val_loss": val_loss,
                        "lr": lr,
                        "best": is_best,
                        "tok_s": tok_s,
                        "elapsed": elapsed,
                        "eval_s": eval_seconds,
                    }
                )
                run.append_metrics(pending)
                pending.clear()
                if is_best:
                    self._save("best", it)
                run.update(iteration=it, best_val=best_val, best_iter=best_iter)
                self._emit(
                    EvalDone(
                        it,
                        train_loss,
                        val_loss,
                        lr,
                        is_best,
                        best_val,
                        best_iter,
                        tok_s,
                        elapsed,
                        eval_seconds,
                        line,
                    )
                )
                step_seconds, step_tokens = 0.0, 0
                if bad_evals >= cfg.patience:
                    status = "early_stopped"
                    self._emit(
                        EarlyStopped(
                            it,
                            best_iter,
                            best_val,
                            cfg.patience,
                            f"early stop: no val improvement for {cfg.patience} evals "
                            f"(best @ iter {best_iter}: {best_val:.4f})",
                        )
                    )
                    break
            if it == cfg.max_iters:
                break
            if self.stop.is_set():
                status = "stopped"
                break

            t0 = time.perf_counter()
            x, y = data_mod.random_batch(self.corpus.train, cfg.batch_size, T, rng)
            lr = lr_at(it, cfg)
            loss = backend.train_step(x, y, lr)
            dt = time.perf_counter() - t0
            step_seconds += dt
            step_tokens += tokens_per_step
            if not math.isfinite(loss):
                run.append_metrics(pending)
                self._save("final", it)
                message = (
                    f"loss became {loss} at iter {it}; the best checkpoint "
                    f"(iter {best_iter}) is kept; try a lower --lr"
                )
                run.update(status="failed", error=message, iteration=it)
                self._emit(RunFailed(message=message, run_dir=run.path, iteration=it))
                return RunResult(run.path, "failed", it, best_val, best_iter)
            elapsed = time.perf_counter() - started
            pending.append(
                {
                    "type": "step",
                    "iter": it,
                    "loss": loss,
                    "lr": lr,
                    "tok_s": tokens_per_step / dt,
                    "elapsed": elapsed,
                }
            )
            if len(pending) >= 50:
                run.append_metrics(pending)
                pending.clear()
            self._emit(StepDone(it, loss, lr, tokens_per_step / dt, elapsed))

        run.append_metrics(pending)
        self._save("final", it)
        best = best_val if best_iter is not None else None
        run.update(status=status, iteration=it, best_val=best, best_iter=best_iter)
        elapsed = time.perf_counter() - started
        words = {
            "completed": f"finished {cfg.max_iters} iterations",
            "early_stopped": "stopped early",
            "stopped": "stopped on request",
        }[status]
        line = (
            f"{words} at iter {it} in {format_elapsed(elapsed)}; best val {best_val:.4f} "
            f"@ iter {best_iter}; checkpoints in {run.path}"
        )
        self._emit(RunFinished(status, it, best, best_iter, run.path, elapsed, line))
        return RunResult(run.path, status, it, best, best_iter)


def train(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    backend: str | Backend = "torch",
    device: str | None = None,
    data: str | Path | data_mod.Corpus | None = None,
    runs_root: Path | None = None,
    on_event: EventCallback | None = None,
    stop: StopRequest | None = None,
) -> RunResult:
    """Train a model to early stop or max_iters; see `Trainer`."""
    trainer = Trainer(model_cfg, train_cfg, backend, device, data, runs_root, on_event, stop)
    return trainer.run_training()
