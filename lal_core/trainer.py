"""Pre-training runs: `Trainer` sets one up and runs it through the one step loop.

A run is a new run folder, or `Trainer.resume` of a stopped or interrupted one. Its steps are
taken by `lal_core.loop.run_steps`, with `lal_core.pretraining.PreTraining` as the job: the
SPEC's recipe (batches, schedule, evals, early stopping, the best checkpoint, the resumable
state, metrics and run.json). The backend does the framework work.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lal_core import data as data_mod
from lal_core import events as ev
from lal_core.backends import Backend, make_backend
from lal_core.checkpoint import STATE_FILE, load_state, read_header
from lal_core.config import ModelConfig, TrainConfig
from lal_core.distributed import AgreedStop, Ranks
from lal_core.errors import LalError
from lal_core.loop import (
    EventCallback,
    LoopEnd,
    run_started,
    run_steps,
    setup_training,
    writing,
)
from lal_core.pretraining import LoopState, PreTraining, evaluate
from lal_core.records import CorpusInfo, ResumeMark, RunRecord
from lal_core.run_lock import RunBusy
from lal_core.runs import RunDir, find_run, process_info

__all__ = ["LoopState", "RunResult", "Trainer", "evaluate", "read_state_header", "train"]


def fast_paths(backend: Backend) -> str:
    """`float32, compiled in 51 s, fused AdamW | `: the backend's fast paths, if it tells."""
    described = backend.describe()
    return f"{described} | " if described else ""


@dataclass
class RunResult:
    run_dir: Path
    status: str
    iteration: int
    best_val: float | None
    best_iter: int | None
    message: str = ""  # why it failed


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
        run_id: str | None = None,
        ranks: Ranks | None = None,
    ) -> None:
        self.model_cfg = model_cfg.validate()
        self.cfg = train_cfg.validate()
        # One of several data-parallel ranks (`lal_core.distributed`), or one process.
        self.ranks = ranks = ranks or Ranks()
        self.micro = self.cfg.micro_per_rank(ranks.world)  # a batch that does not split: refused
        if ranks.device.startswith("cuda"):
            device = ranks.device  # one GPU per local rank
        # Kept in run.json, so a resumed run computes the same way (dtype, compile).
        self.backend_options = {k: v for k, v in (backend_options or {}).items() if v is not None}
        # The backend first: a missing device or framework is found before any file is written.
        if isinstance(backend, Backend):
            self.backend = backend
        else:
            self.backend = make_backend(
                backend, model_cfg, seed=train_cfg.seed, device=device, **self.backend_options
            )
        self.backend.use_ranks(ranks)
        self.peak_tflops = peak_tflops  # MFU's peak: the user's, else the backend's default
        if isinstance(data, data_mod.Corpus):
            self.corpus = data
        else:
            self.corpus = data_mod.load_corpus(data, block_size=model_cfg.block_size)
        data_mod.check_corpus_fits(self.corpus, model_cfg.block_size)
        self.on_event = on_event or (lambda event: None)
        self.stop = stop or ev.StopRequest()
        self.runs_root = runs_root
        self.run_id = run_id  # the new run folder's name (None: a fresh one)
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
        micro_batch: int | None = None,
        ranks: Ranks | None = None,
    ) -> Trainer:
        """A trainer that continues the run `run_ref` from its last saved state (`max_iters`,
        `device`, `micro_batch` and the ranks, where given, replace the run's: they change
        how it runs, not what it learns)."""
        ranks = ranks or Ranks()
        run = find_run(str(run_ref), runs_root)
        record = run.read()
        writer = run.writer() if ranks.main else None  # rank 0 may hold it already
        if writer is not None:  # the early word; the lock taken in run_training is the guard
            raise RunBusy(f"run {run.run_id} is being written by {writer.describe()}")
        if record.train_config is None or record.data is None:
            missing = "train_config" if record.train_config is None else "data"
            raise LalError(f"{run.run_json} is missing {missing!r}; this run cannot be resumed")
        train_cfg = record.train_config
        changes = {"max_iters": max_iters, "micro_batch": micro_batch}
        if any(v is not None for v in changes.values()):
            given = {k: v for k, v in changes.items() if v is not None}
            train_cfg = replace(train_cfg, **given).validate()
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
            ranks=ranks,
        )
        trainer._resume_from = run
        return trainer

    def _header(self, run: RunDir, corpus: CorpusInfo) -> str:
        backend, block = self.backend, self.model_cfg.block_size
        whole = len(data_mod.eval_windows(self.corpus.val, block)) * block
        scored = "" if corpus.eval_tokens == whole else f", {corpus.eval_tokens:,} per eval"
        return (
            f"run {run.run_id} | config {self.model_cfg.name} "
            f"({backend.num_parameters() / 1e6:.2f}M params) | "
            f"Device: {backend.name}/{backend.device} | {fast_paths(backend)}"
            f"data {self.corpus.path.name} "
            f"({corpus.train_tokens:,} train / {corpus.val_tokens:,} val tokens{scored})"
            f"{self._ranks_said()}"
        )

    def _ranks_said(self) -> str:
        """` | 2 ranks x micro-batch 8 (gloo)` for a data-parallel run, '' for one process."""
        if not self.ranks.joined:
            return ""
        link = "nccl" if self.ranks.device.startswith("cuda") else "gloo"
        link = "mlx.launch" if self.ranks.via == "mlx" else link
        ranks = f"{self.ranks.world} rank{'s' if self.ranks.world > 1 else ''}"
        return f" | {ranks} x micro-batch {self.micro} ({link})"

    def _corpus_info(self) -> CorpusInfo:
        """The corpus as run.json records it, with the val tokens an eval scores."""
        block = self.model_cfg.block_size
        windows = data_mod.val_windows(self.corpus.val, block, self.cfg.eval_tokens)
        return CorpusInfo(**self.corpus.describe(), eval_tokens=len(windows) * block)

    def _folder(self) -> RunDir:
        """The run's folder: a new one, or the resumed one."""
        try:
            return self._resume_from or RunDir.create(
                self.model_cfg.name, self.backend.name, self.runs_root, self.run_id
            )
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise LalError(f"cannot create the run folder: {exc.strerror or exc}{where}") from None

    def _start(self, run: RunDir, emit: EventCallback, corpus: CorpusInfo) -> LoopState:
        """run.json (new, or the resumed run's marked running again), the backend's setup
        (announced: compiling takes a while), then a resumed run's weights and optimizer."""
        weights = optimizer = None
        if self._resume_from is None:
            run.write(
                RunRecord(
                    run_id=run.run_id,
                    model_config=self.model_cfg,
                    created=time.time(),
                    train_config=self.cfg,
                    backend=self.backend.name,
                    device=self.backend.device,
                    backend_options=self.backend_options,
                    **self._ranks_fields(),
                    n_params=self.backend.num_parameters(),
                    data=corpus,
                    status="running",
                    process=process_info(),
                )
            )
            state = LoopState()
        else:
            weights, optimizer, state = self._saved_state()
            run.drop_events_after(state.iteration, state.evaluated)
            run.remove_temp_files()
            record = run.read()
            run.update(
                record,
                status="running",
                train_config=self.cfg,
                **self._ranks_fields(),
                process=process_info(),
                resumed=(*record.resumed, ResumeMark(iteration=state.iteration, time=time.time())),
                error=None,
            )
        self._set_up(emit, weights, optimizer)
        return state

    def _ranks_fields(self) -> dict[str, Any]:
        """run.json's record of the ranks (kept out of it for one process)."""
        several = self.ranks.world > 1
        return {"world_size": self.ranks.world, "micro_per_rank": self.micro if several else None}

    def _saved_state(self) -> tuple[dict, dict, LoopState]:
        """A resumed run's saved weights, optimizer state and loop state."""
        assert self._resume_from is not None
        weights, optimizer, saved = load_state(self._resume_from.path / STATE_FILE, self.model_cfg)
        return weights, optimizer, LoopState.from_dict(saved)

    def _set_up(self, emit: EventCallback, weights: dict | None, optimizer: dict | None) -> None:
        """The backend's setup (announced: compiling takes a while), then a resumed run's
        weights and optimizer state."""
        setup_training(self.backend, self.cfg, emit)
        if weights is not None:
            self.backend.load_state_dict(weights)
            self.backend.load_optimizer_state(optimizer)

    def run_training(self) -> RunResult:
        """Take the run's folder (refused in one line if another process writes it), train,
        and let go of it; every event goes to the folder's log, then to `on_event`. On several
        ranks rank 0 does this; the others train beside it and write nothing."""
        if not self.ranks.main:
            return self._run_beside_rank_0()
        run = self.run = self._folder()

        def failed(message: str) -> None:
            if run.run_json.is_file():
                run.update(status="failed", error=message)

        b, corpus = self.backend, self._corpus_info()
        stop = AgreedStop(self.stop, self.ranks) if self.ranks.joined else self.stop
        with writing(run, "train", self.stop, self.on_event, failed) as emit:
            state = self._start(run, emit, corpus)
            emit(
                run_started(
                    run,
                    b,
                    "train",
                    self.cfg.max_iters,
                    self._header(run, corpus),
                    train_config=self.cfg,
                    corpus=corpus,
                )
            )
            job = PreTraining(self.cfg, b, self.corpus, run, state, emit, self.peak_tflops, stop)
            end = run_steps(b, job, stop)
        return _result(run.path, job, end)

    def _run_beside_rank_0(self) -> RunResult:
        """A rank other than 0: the same steps and evals (the collectives need every rank),
        from the same saved state on a resume, with no file written and no event said."""
        quiet: EventCallback = lambda event: None  # noqa: E731
        weights = optimizer = None
        state = LoopState()
        if self._resume_from is not None:
            weights, optimizer, state = self._saved_state()
        self._set_up(quiet, weights, optimizer)
        stop = AgreedStop(self.stop, self.ranks)
        job = PreTraining(self.cfg, self.backend, self.corpus, None, state, quiet, None, stop)
        end = run_steps(self.backend, job, stop)
        path = self._resume_from.path if self._resume_from is not None else Path()
        return _result(path, job, end)


def _result(run_dir: Path, job: PreTraining, end: LoopEnd) -> RunResult:
    state = job.state
    best = state.best_val if state.best_iter is not None else None
    return RunResult(run_dir, end.status, job.iteration, best, state.best_iter, end.message)


def train(model_cfg: ModelConfig, train_cfg: TrainConfig, **options: Any) -> RunResult:
    """Train a model to early stop or max_iters; `options` are `Trainer`'s."""
    return Trainer(model_cfg, train_cfg, **options).run_training()
