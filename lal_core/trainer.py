"""The training loop, written once for every backend.

    for it in 0 .. max_iters:
        every eval_interval (and at the end): eval train/val, keep the best, maybe stop early
        one optimisation step at lr_at(it)

The backend does the framework work (a step, an eval batch, weights in and out); this module
owns the recipe: batches, schedule, eval cadence, early stopping, checkpoints, metrics, events
and the stop request.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from lal_core import data as data_mod
from lal_core.backends import Backend, make_backend
from lal_core.checkpoint import STATE_FILE, load_state, read_header, save_state, save_weights
from lal_core.config import ModelConfig, TrainConfig
from lal_core.errors import LalError
from lal_core.events import (
    CheckpointSaved,
    EarlyStopped,
    EvalDone,
    Event,
    Preparing,
    RunFailed,
    RunFinished,
    RunStarted,
    StepDone,
    StopRequest,
)
from lal_core.flops import mfu
from lal_core.runs import RunDir, find_run, process_info, summarize
from lal_core.schedule import lr_at

EventCallback = Callable[[Event], None]


def format_elapsed(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def eval_line(
    it: int,
    train: float,
    val: float,
    lr: float,
    tok_s: float,
    elapsed: float,
    best: bool,
    mfu: float | None = None,
) -> str:
    """The SPEC's log line, plus throughput: `iter 250  | train 4.5904  | val 5.1055  | ...`."""
    util = f" ({mfu:.0%} MFU)" if mfu is not None and tok_s else ""
    return (
        f"iter {it:<4} | train {train:<7.4f} | val {val:<7.4f} | lr {lr:.2e} | "
        f"{tok_s:,.0f} tok/s{util} | {format_elapsed(elapsed)}{' *' if best else ''}"
    )


def fast_paths(backend: Backend) -> str:
    """`float32, compiled in 51 s, fused AdamW | `: the backend's fast paths, if it tells."""
    described = backend.describe()
    return f"{described} | " if described else ""


def setup_training(backend: Backend, cfg: TrainConfig, emit: EventCallback) -> None:
    """`backend.setup_training(cfg)`, saying first what it will spend a while on (compiling),
    so the wait is announced before it starts, not after."""
    notice = backend.preparing()
    if notice:
        emit(Preparing(line=notice))
    backend.setup_training(cfg)


def peak_flops(backend: Backend, peak_tflops: float | None) -> float | None:
    """FLOP/s for MFU: the user's --peak-tflops, else the backend's default for its device."""
    if peak_tflops:
        return peak_tflops * 1e12
    return backend.peak_flops()


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


@dataclass
class LoopState:
    """Where the loop is: enough, with the weights and optimizer, to resume exactly."""

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


class Trainer:
    """One training run. Build it, then `run_training()`; `stop.set()` from another thread ends
    it after the step in progress. `Trainer.resume(run)` continues a stopped or interrupted run."""

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
        peak_tflops: float | None = None,
        backend_options: dict[str, Any] | None = None,
    ) -> None:
        self.model_cfg = model_cfg.validate()
        self.cfg = train_cfg.validate()
        # The backend first: a missing device or framework is found before any file is written.
        if isinstance(backend, Backend):
            self.backend = backend
        else:
            self.backend = make_backend(
                backend, model_cfg, seed=train_cfg.seed, device=device, **(backend_options or {})
            )
        # The peak FLOP/s that MFU is measured against: the user's, else the backend's default.
        self.peak_tflops = peak_tflops
        # Kept in run.json, so a resumed run computes the same way (dtype, compile).
        self.backend_options = {k: v for k, v in (backend_options or {}).items() if v is not None}
        if isinstance(data, data_mod.Corpus):
            self.corpus = data
        else:
            self.corpus = data_mod.load_corpus(data, block_size=model_cfg.block_size)
        data_mod.check_corpus_fits(self.corpus, model_cfg.block_size)
        self.on_event = on_event or (lambda event: None)
        self.stop = stop or StopRequest()
        self.runs_root = runs_root
        self.run: RunDir | None = None
        self._resume_from: RunDir | None = None

    @classmethod
    def resume(
        cls,
        run_ref: str | Path,
        runs_root: Path | None = None,
        max_iters: int | None = None,
        device: str | None = None,
        on_event: EventCallback | None = None,
        stop: StopRequest | None = None,
    ) -> Trainer:
        """A trainer that continues the run `run_ref` from its last saved state."""
        run = find_run(str(run_ref), runs_root)
        summary = summarize(run)
        info = run.read()
        if summary.status == "running":
            owner = info.get("process", {})
            raise LalError(f"run {run.run_id} is still running (pid {owner.get('pid')})")
        try:
            model_cfg = ModelConfig.from_dict(info["model_config"])
            train_cfg = TrainConfig.from_dict(info["train_config"])
            data_info = info["data"]
        except (KeyError, TypeError) as exc:
            raise LalError(f"{run.run_json} is missing {exc}; this run cannot be resumed") from None
        if max_iters is not None:
            train_cfg = replace(train_cfg, max_iters=max_iters).validate()
        if not (run.path / STATE_FILE).is_file():
            raise LalError(f"run {run.run_id} has no saved training state ({STATE_FILE}) to resume")
        state = LoopState.from_dict(read_state_header(run.path / STATE_FILE))
        if (
            summary.status in ("completed", "early_stopped")
            and state.iteration >= train_cfg.max_iters
        ):
            raise LalError(
                f"run {run.run_id} already {summary.status.replace('_', ' ')} at iter "
                f"{state.iteration}; pass --max-iters above it to train further"
            )
        corpus = data_mod.load_corpus(data_info.get("path"), block_size=model_cfg.block_size)
        if corpus.sha256 != data_info.get("sha256"):
            raise LalError(
                f"the corpus {corpus.path} changed since run {run.run_id} started "
                "(sha256 differs); resuming on other text would not continue the same run"
            )
        trainer = cls(
            model_cfg,
            train_cfg,
            info.get("backend", "torch"),
            device or info.get("device"),
            corpus,
            runs_root,
            on_event,
            stop,
            backend_options=info.get("backend_options") or {},
        )
        trainer._resume_from = run
        return trainer

    def _emit(self, event: Event) -> None:
        self.on_event(event)

    def _save(self, kind: str, iteration: int) -> None:
        assert self.run is not None
        path = self.run.checkpoint(kind)
        save_weights(path, self.backend.state_dict(), self.model_cfg, {"iteration": iteration})
        self._emit(CheckpointSaved(iteration=iteration, kind=kind, path=path))

    def _save_state(self, state: LoopState) -> None:
        assert self.run is not None
        save_state(
            self.run.path / STATE_FILE,
            self.backend.state_dict(),
            self.backend.optimizer_state(),
            self.model_cfg,
            state.to_dict(),
        )

    def _header(self, run: RunDir) -> str:
        backend = self.backend
        return (
            f"run {run.run_id} | config {self.model_cfg.name} "
            f"({backend.num_parameters() / 1e6:.2f}M params) | "
            f"Device: {backend.name}/{backend.device} | {fast_paths(backend)}"
            f"data {self.corpus.path.name} "
            f"({len(self.corpus.train):,} train / {len(self.corpus.val):,} val tokens)"
        )

    def _start_run(self) -> tuple[RunDir, LoopState]:
        cfg, mcfg, backend = self.cfg, self.model_cfg, self.backend
        setup_training(backend, cfg, self._emit)
        if self._resume_from is not None:
            run = self._resume_from
            weights, optimizer, saved = load_state(run.path / STATE_FILE, mcfg)
            backend.load_state_dict(weights)
            backend.load_optimizer_state(optimizer)
            state = LoopState.from_dict(saved)
            run.drop_metrics_after(state.iteration, state.evaluated)
            info = run.read()
            resumed = info.get("resumed", []) + [
                {"iteration": state.iteration, "time": time.time()}
            ]
            run.update(
                status="running",
                train_config=cfg.to_dict(),
                process=process_info(),
                resumed=resumed,
                error=None,
            )
            return run, state
        run = RunDir.create(mcfg.name, backend.name, self.runs_root)
        run.write(
            {
                "format_version": 1,
                "run_id": run.run_id,
                "created": time.time(),
                "model_config": mcfg.to_dict(),
                "train_config": cfg.to_dict(),
                "backend": backend.name,
                "device": backend.device,
                "backend_options": self.backend_options,
                "n_params": backend.num_parameters(),
                "data": self.corpus.describe(),
                "iteration": 0,
                "best_val": None,
                "best_iter": None,
                "status": "running",
                "process": process_info(),
            }
        )
        return run, LoopState()

    def run_training(self) -> RunResult:
        self.run = run = None
        try:
            self.run, state = self._start_run()
        except OSError as exc:
            raise LalError(
                f"cannot create the run folder: {exc.strerror} ({exc.filename})"
            ) from None
        run = self.run
        b = self.backend
        self._emit(
            RunStarted(
                run.run_id,
                run.path,
                self.model_cfg.to_dict(),
                self.cfg.to_dict(),
                b.name,
                b.device,
                b.num_parameters(),
                self.corpus.describe(),
                self._header(run),
            )
        )
        try:
            return self._loop(run, state)
        except BaseException as exc:
            message = str(exc) if isinstance(exc, LalError) else f"{type(exc).__name__}: {exc}"
            if isinstance(exc, KeyboardInterrupt):
                message = "interrupted"
            run.update(status="failed", error=message)
            self._emit(RunFailed(message=message, run_dir=run.path))
            raise

    def _loop(self, run: RunDir, state: LoopState) -> RunResult:
        cfg, T, backend = self.cfg, self.model_cfg.block_size, self.backend
        rng = np.random.default_rng(cfg.seed)
        if state.batch_rng is not None:
            rng.bit_generator.state = state.batch_rng
        status = "completed"
        started = time.perf_counter() - state.elapsed
        step_seconds, step_tokens = 0.0, 0  # since the last eval, for its tokens/s
        tokens_per_step = cfg.batch_size * T
        pending: list[dict] = []
        peak = peak_flops(backend, self.peak_tflops)

        def snapshot(it: int, evaluated: bool) -> None:
            state.iteration, state.evaluated = it, evaluated
            state.elapsed = time.perf_counter() - started
            state.batch_rng = rng.bit_generator.state
            self._save_state(state)

        for it in range(state.iteration, cfg.max_iters + 1):
            is_eval_point = it % cfg.eval_interval == 0 or it == cfg.max_iters
            if is_eval_point and not (state.evaluated and it == state.iteration):
                t0 = time.perf_counter()
                train_loss, val_loss = evaluate(backend, self.corpus, T, cfg.batch_size)
                eval_seconds = time.perf_counter() - t0
                is_best = val_loss < state.best_val
                if is_best:
                    state.best_val, state.best_iter, state.bad_evals = val_loss, it, 0
                else:
                    state.bad_evals += 1
                tok_s = step_tokens / step_seconds if step_seconds else 0.0
                elapsed = time.perf_counter() - started
                lr = lr_at(it, cfg)
                util = mfu(tok_s, self.model_cfg, peak)
                line = eval_line(it, train_loss, val_loss, lr, tok_s, elapsed, is_best, util)
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
                snapshot(it, evaluated=True)
                run.update(iteration=it, best_val=state.best_val, best_iter=state.best_iter)
                self._emit(
                    EvalDone(
                        it,
                        train_loss,
                        val_loss,
                        lr,
                        is_best,
                        state.best_val,
                        state.best_iter,
                        tok_s,
                        elapsed,
                        eval_seconds,
                        line,
                        util,
                    )
                )
                step_seconds, step_tokens = 0.0, 0
                if state.bad_evals >= cfg.patience:
                    status = "early_stopped"
                    self._emit(
                        EarlyStopped(
                            it,
                            state.best_iter,
                            state.best_val,
                            cfg.patience,
                            f"early stop: no val improvement for {cfg.patience} evals "
                            f"(best @ iter {state.best_iter}: {state.best_val:.4f})",
                        )
                    )
                    break
            if it == cfg.max_iters:
                break
            if self.stop.is_set():
                status = "stopped"
                run.append_metrics(pending)
                pending.clear()
                snapshot(it, evaluated=is_eval_point)
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
                    f"loss or gradient became {loss} at iter {it}; the best checkpoint "
                    f"(iter {state.best_iter}) is kept and the run can resume from its "
                    "last eval; try a lower --lr"
                )
                run.update(status="failed", error=message, iteration=it)
                self._emit(RunFailed(message=message, run_dir=run.path, iteration=it))
                return RunResult(run.path, "failed", it, state.best_val, state.best_iter)
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
            tok_s = tokens_per_step / dt
            self._emit(StepDone(it, loss, lr, tok_s, elapsed, mfu(tok_s, self.model_cfg, peak)))

        run.append_metrics(pending)
        self._save("final", it)
        best = state.best_val if state.best_iter is not None else None
        run.update(status=status, iteration=it, best_val=best, best_iter=state.best_iter)
        elapsed = time.perf_counter() - started
        words = {
            "completed": f"finished {cfg.max_iters} iterations",
            "early_stopped": "stopped early",
            "stopped": "stopped on request",
        }[status]
        line = (
            f"{words} at iter {it} in {format_elapsed(elapsed)}; best val "
            f"{state.best_val:.4f} @ iter {state.best_iter}; checkpoints in {run.path}"
        )
        self._emit(RunFinished(status, it, best, state.best_iter, run.path, elapsed, line))
        return RunResult(run.path, status, it, best, state.best_iter)


def read_state_header(path: Path) -> dict:
    """The loop state saved in a state file's header (iteration, best val, ...)."""
    meta = read_header(path)
    try:
        return json.loads(meta["trainer_state"])
    except (KeyError, json.JSONDecodeError):
        raise LalError(f"{path} holds no training state") from None


def train(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    backend: str | Backend = "torch",
    device: str | None = None,
    data: str | Path | data_mod.Corpus | None = None,
    runs_root: Path | None = None,
    on_event: EventCallback | None = None,
    stop: StopRequest | None = None,
    peak_tflops: float | None = None,
    backend_options: dict[str, Any] | None = None,
) -> RunResult:
    """Train a model to early stop or max_iters; see `Trainer`."""
    trainer = Trainer(
        model_cfg,
        train_cfg,
        backend,
        device,
        data,
        runs_root,
        on_event,
        stop,
        peak_tflops=peak_tflops,
        backend_options=backend_options,
    )
    return trainer.run_training()
