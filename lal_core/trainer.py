"""Pre-training: the SPEC's recipe on any backend, through the one step loop (`lal_core.loop`).

    for it in 0 .. max_iters:
        every eval_interval (and at the end): eval train/val, keep the best, maybe stop early
        one optimisation step on a random batch at lr_at(it)

`Trainer` sets a run up (a new run folder, or `Trainer.resume` of a stopped one); `PreTraining`
is its part of the loop: batches, schedule, eval cadence, early stopping, the best checkpoint,
the resumable state, metrics and run.json. The backend does the framework work.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from lal_core import data as data_mod
from lal_core import events as ev
from lal_core.backends import Backend, make_backend
from lal_core.checkpoint import STATE_FILE, load_state, read_header
from lal_core.config import ModelConfig, TrainConfig
from lal_core.errors import LalError
from lal_core.flops import mfu
from lal_core.loop import Checkpoints, Clock, EventCallback, Job, Step, format_elapsed, run_steps
from lal_core.records import CorpusInfo, EvalRecord, MetricRecord, ResumeMark, RunRecord, StepRecord
from lal_core.runs import RunDir, find_run, live_status, process_info
from lal_core.schedule import lr_at

METRICS_FLUSH_SECONDS = 0.5  # step records reach metrics.jsonl at least this often


def eval_line(record: EvalRecord, mfu: float | None = None) -> str:
    """The SPEC's log line, plus throughput: `iter 250  | train 4.5904  | val 5.1055  | ...`."""
    r = record
    util = f" ({mfu:.0%} MFU)" if mfu is not None and r.tokens_per_sec else ""
    return (
        f"iter {r.iteration:<4} | train {r.train_loss:<7.4f} | val {r.val_loss:<7.4f} | "
        f"lr {r.lr:.2e} | {r.tokens_per_sec:,.0f} tok/s{util} | {format_elapsed(r.elapsed)}"
        f"{' *' if r.is_best else ''}"
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
        emit(ev.Preparing(line=notice))
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


def read_state_header(path: Path) -> dict:
    """The loop state saved in a state file's header (iteration, best val, ...)."""
    meta = read_header(path)
    try:
        return json.loads(meta["trainer_state"])
    except (KeyError, json.JSONDecodeError):
        raise LalError(f"{path} holds no training state") from None


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
        stop: ev.StopRequest | None = None,
        peak_tflops: float | None = None,
        backend_options: dict[str, Any] | None = None,
    ) -> None:
        self.model_cfg = model_cfg.validate()
        self.cfg = train_cfg.validate()
        # Kept in run.json, so a resumed run computes the same way (dtype, compile).
        self.backend_options = {k: v for k, v in (backend_options or {}).items() if v is not None}
        # The backend first: a missing device or framework is found before any file is written.
        if isinstance(backend, Backend):
            self.backend = backend
        else:
            self.backend = make_backend(
                backend, model_cfg, seed=train_cfg.seed, device=device, **self.backend_options
            )
        self.peak_tflops = peak_tflops  # MFU's peak: the user's, else the backend's default
        if isinstance(data, data_mod.Corpus):
            self.corpus = data
        else:
            self.corpus = data_mod.load_corpus(data, block_size=model_cfg.block_size)
        data_mod.check_corpus_fits(self.corpus, model_cfg.block_size)
        self.on_event = on_event or (lambda event: None)
        self.stop = stop or ev.StopRequest()
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
        stop: ev.StopRequest | None = None,
    ) -> Trainer:
        """A trainer that continues the run `run_ref` from its last saved state."""
        run = find_run(str(run_ref), runs_root)
        record = run.read()
        if live_status(record) == "running":
            pid = record.process.pid if record.process else "?"
            raise LalError(f"run {run.run_id} is still running (pid {pid})")
        if record.train_config is None or record.data is None:
            missing = "train_config" if record.train_config is None else "data"
            raise LalError(f"{run.run_json} is missing {missing!r}; this run cannot be resumed")
        train_cfg = record.train_config
        if max_iters is not None:
            train_cfg = replace(train_cfg, max_iters=max_iters).validate()
        if not (run.path / STATE_FILE).is_file():
            raise LalError(f"run {run.run_id} has no saved training state ({STATE_FILE}) to resume")
        state = LoopState.from_dict(read_state_header(run.path / STATE_FILE))
        done = record.status in ("completed", "early_stopped")
        if done and state.iteration >= train_cfg.max_iters:
            raise LalError(
                f"run {run.run_id} already {record.status.replace('_', ' ')} at iter "
                f"{state.iteration}; pass --max-iters above it to train further"
            )
        corpus = data_mod.load_corpus(record.data.path, block_size=record.model_config.block_size)
        if corpus.sha256 != record.data.sha256:
            raise LalError(
                f"the corpus {corpus.path} changed since run {run.run_id} started "
                "(sha256 differs); resuming on other text would not continue the same run"
            )
        trainer = cls(
            record.model_config,
            train_cfg,
            backend=record.backend,
            device=device or record.device,
            data=corpus,
            runs_root=runs_root,
            on_event=on_event,
            stop=stop,
            backend_options=record.backend_options,
        )
        trainer._resume_from = run
        return trainer

    def _header(self, run: RunDir) -> str:
        backend, corpus = self.backend, self.corpus
        return (
            f"run {run.run_id} | config {self.model_cfg.name} "
            f"({backend.num_parameters() / 1e6:.2f}M params) | "
            f"Device: {backend.name}/{backend.device} | {fast_paths(backend)}"
            f"data {corpus.path.name} "
            f"({len(corpus.train):,} train / {len(corpus.val):,} val tokens)"
        )

    def _start_run(self) -> tuple[RunDir, LoopState]:
        setup_training(self.backend, self.cfg, self.on_event)
        if self._resume_from is not None:
            return self._continue_run(self._resume_from)
        backend = self.backend
        run = RunDir.create(self.model_cfg.name, backend.name, self.runs_root)
        record = RunRecord(
            run_id=run.run_id,
            model_config=self.model_cfg,
            created=time.time(),
            train_config=self.cfg,
            backend=backend.name,
            device=backend.device,
            backend_options=self.backend_options,
            n_params=backend.num_parameters(),
            data=CorpusInfo(**self.corpus.describe()),
            status="running",
            process=process_info(),
        )
        run.write(record)
        return run, LoopState()

    def _continue_run(self, run: RunDir) -> tuple[RunDir, LoopState]:
        weights, optimizer, saved = load_state(run.path / STATE_FILE, self.model_cfg)
        self.backend.load_state_dict(weights)
        self.backend.load_optimizer_state(optimizer)
        state = LoopState.from_dict(saved)
        run.drop_metrics_after(state.iteration, state.evaluated)
        mark = ResumeMark(iteration=state.iteration, time=time.time())
        run.update(
            status="running",
            train_config=self.cfg,
            process=process_info(),
            resumed=(*run.read().resumed, mark),
            error=None,
        )
        return run, state

    def run_training(self) -> RunResult:
        try:
            self.run, state = self._start_run()
        except OSError as exc:
            raise LalError(
                f"cannot create the run folder: {exc.strerror} ({exc.filename})"
            ) from None
        run, b = self.run, self.backend
        self.on_event(
            ev.RunStarted(
                run_id=run.run_id,
                run_dir=run.path,
                kind="train",
                model_config=self.model_cfg,
                backend=b.name,
                device=b.device,
                n_params=b.num_parameters(),
                max_steps=self.cfg.max_iters,
                header=self._header(run),
                train_config=self.cfg,
                corpus=CorpusInfo(**self.corpus.describe()),
            )
        )
        job = PreTraining(self, run, state)
        try:
            end = run_steps(b, job, self.on_event, self.stop, job.checkpoints, job.peak)
        except BaseException as exc:
            message = str(exc) if isinstance(exc, LalError) else f"{type(exc).__name__}: {exc}"
            if isinstance(exc, KeyboardInterrupt):
                message = "interrupted"
            run.update(status="failed", error=message)
            self.on_event(ev.RunFailed(message=message, run_dir=run.path))
            raise
        best = job.state.best_val if job.state.best_iter is not None else None
        return RunResult(run.path, end.status, job.iteration, best, job.state.best_iter)


class PreTraining(Job):
    """Pre-training's part of the step loop: random batches at the scheduled lr; an eval every
    eval_interval steps (and at the end) with the best checkpoint, the resumable state and
    early stopping; the state again on a stop; metrics.jsonl and run.json throughout."""

    def __init__(self, trainer: Trainer, run: RunDir, state: LoopState) -> None:
        self.cfg, self.model_cfg = trainer.cfg, trainer.model_cfg
        self.backend, self.corpus, self.emit = trainer.backend, trainer.corpus, trainer.on_event
        self.run, self.state = run, state
        self.checkpoints = Checkpoints(run, trainer.backend, trainer.on_event)
        self.peak = peak_flops(trainer.backend, trainer.peak_tflops)
        self.clock = Clock(state.elapsed)
        self.rng = np.random.default_rng(self.cfg.seed)
        if state.batch_rng is not None:
            self.rng.bit_generator.state = state.batch_rng
        self.pending: list[MetricRecord] = []
        self.flushed = time.monotonic()
        self.step_seconds, self.step_tokens = 0.0, 0  # since the last eval, for its tokens/s
        self.failure = ""

    @property
    def iteration(self) -> int:
        return self.state.iteration

    def flush(self) -> None:
        self.run.append_metrics(self.pending)
        self.pending.clear()
        self.flushed = time.monotonic()

    def snapshot(self) -> None:
        self.state.elapsed = self.clock()
        self.state.batch_rng = self.rng.bit_generator.state
        self.checkpoints.save_state(self.state.to_dict())

    def before_step(self) -> str | None:
        it, cfg = self.state.iteration, self.cfg
        due = it % cfg.eval_interval == 0 or it >= cfg.max_iters
        if due and not self.state.evaluated and self.eval_and_stop_early():
            return "early_stopped"
        return "completed" if it >= cfg.max_iters else None

    def eval_and_stop_early(self) -> bool:
        """The eval at this iteration: record it, keep a new best, save the resumable state;
        True when val loss has not improved for `patience` evals."""
        state, cfg, it = self.state, self.cfg, self.state.iteration
        t0 = time.perf_counter()
        train_loss, val_loss = evaluate(
            self.backend, self.corpus, self.model_cfg.block_size, cfg.batch_size
        )
        is_best = val_loss < state.best_val
        if is_best:
            state.best_val, state.best_iter, state.bad_evals = val_loss, it, 0
        else:
            state.bad_evals += 1
        tok_s = self.step_tokens / self.step_seconds if self.step_seconds else 0.0
        record = EvalRecord(
            iteration=it,
            train_loss=train_loss,
            val_loss=val_loss,
            lr=lr_at(it, cfg),
            is_best=is_best,
            tokens_per_sec=tok_s,
            elapsed=self.clock(),
            eval_seconds=time.perf_counter() - t0,
        )
        self.pending.append(record)
        self.flush()
        if is_best:
            self.checkpoints.save("best", it, {"iteration": it})
        state.evaluated = True
        self.snapshot()
        self.run.update(iteration=it, best_val=state.best_val, best_iter=state.best_iter)
        util = mfu(tok_s, self.model_cfg, self.peak)
        self.emit(
            ev.EvalDone(
                iteration=it,
                train_loss=train_loss,
                val_loss=val_loss,
                lr=record.lr,
                is_best=is_best,
                tokens_per_sec=tok_s,
                elapsed=record.elapsed,
                eval_seconds=record.eval_seconds,
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

    def next_step(self) -> Step:
        it, cfg = self.state.iteration, self.cfg
        x, y = data_mod.random_batch(
            self.corpus.train, cfg.batch_size, self.model_cfg.block_size, self.rng
        )
        return Step(iteration=it, x=x, y=y, lr=lr_at(it, cfg))

    def step_done(self, step: Step, loss: float, seconds: float) -> None:
        self.step_seconds += seconds
        self.step_tokens += step.x.size
        tok_s = step.x.size / seconds if seconds > 0 else 0.0
        self.pending.append(StepRecord(step.iteration, loss, step.lr, tok_s, self.clock()))
        self.state.iteration, self.state.evaluated = step.iteration + 1, False
        if time.monotonic() - self.flushed >= METRICS_FLUSH_SECONDS:
            self.flush()

    def stopped(self) -> None:
        self.flush()
        self.snapshot()

    def failed(self, step: Step, loss: float) -> str:
        self.failure = (
            f"loss or gradient became {loss} at iter {step.iteration}; the best checkpoint "
            f"(iter {self.state.best_iter}) is kept and the run can resume from its last "
            "eval; try a lower --lr"
        )
        return self.failure

    def output(self) -> tuple[str, dict[str, Any]]:
        return "final", {"iteration": self.state.iteration}

    def finish(self, status: str) -> None:
        self.flush()
        state, it = self.state, self.state.iteration
        if status == "failed":
            self.run.update(status="failed", error=self.failure, iteration=it)
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


def train(model_cfg: ModelConfig, train_cfg: TrainConfig, **options: Any) -> RunResult:
    """Train a model to early stop or max_iters; `options` are `Trainer`'s."""
    return Trainer(model_cfg, train_cfg, **options).run_training()
