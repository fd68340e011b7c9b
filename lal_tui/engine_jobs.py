"""The engine jobs the dashboard runs with `lal_tui.jobs.JobRunner`: train, resume, fine-tune,
sample, answer a chat question, count a corpus.

Each factory returns a `job(post, stop)` that only calls the engine's API and posts messages.
Engine modules are imported inside the job, on its thread, so the dashboard shows at once
instead of waiting for torch to import.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lal_core.events import Event, StopRequest
from lal_core.flags import RunRequest
from lal_tui import messages as msg
from lal_tui.jobs import Job, Post

ANSWER_TOKENS = 60


def training(request: RunRequest) -> Job:
    """A new run with exactly what `request` holds: configs, place and backend switches."""

    def job(post: Post, stop: StopRequest):
        from lal_core.trainer import Trainer

        def on_event(event: Event) -> None:
            post(msg.TrainEvent(event))

        options = request.trainer_options()
        trainer = Trainer(
            request.model_config, request.train_config, on_event=on_event, stop=stop, **options
        )
        return trainer.run_training()

    return job


def resuming(run_path: Path, runs_dir: Path | None) -> Job:
    """Continue a stopped or interrupted run from its last saved state, with its own settings."""

    def job(post: Post, stop: StopRequest):
        from lal_core.trainer import Trainer

        def on_event(event: Event) -> None:
            post(msg.TrainEvent(event))

        return Trainer.resume(run_path, runs_dir, on_event=on_event, stop=stop).run_training()

    return job


def fine_tuning(run_path: str, where: RunRequest) -> Job:
    """SFT of the run's best checkpoint, on the backend and device the dashboard was given."""

    def job(post: Post, stop: StopRequest):
        from lal_core.sft import run_sft

        def on_event(event: Event) -> None:
            post(msg.SFTEvent(event))

        return run_sft(
            run_path,
            backend=where.backend,
            device=where.device,
            runs_root=where.runs_dir,
            on_event=on_event,
            stop=stop,
        )

    return job


@dataclass(frozen=True)
class SampleRequest:
    """What the Sample pane asks for."""

    ref: str  # a run folder
    kind: str  # its checkpoint: best, final or sft
    prompt: str
    temperature: float
    top_k: int | None
    tokens: int
    seed: int | None


class ModelCache:
    """The checkpoint last loaded for sampling, kept while its file is unchanged: generating
    again from the same run should not wait for the load."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._model: object = None

    def get(self, path: Path, backend: str, device: str | None) -> object:
        from lal_core.sampling import load_for_sampling

        key = (str(path), path.stat().st_mtime_ns, backend, device)
        with self._lock:
            if key != self._key:
                self._model, self._key = load_for_sampling(path, backend, device), key
            return self._model


def sampling(request: SampleRequest, where: RunRequest, models: ModelCache) -> Job:
    """Stream tokens from a checkpoint: one SampleToken per token, then SampleFinished."""

    def job(post: Post, stop: StopRequest) -> int:
        from lal_core.runs import resolve_checkpoint
        from lal_core.sampling import check_sampling_args, stream

        r = request
        check_sampling_args(r.temperature, r.top_k, r.tokens)
        path = resolve_checkpoint(r.ref, r.kind, where.runs_dir)
        model = models.get(path, where.backend, where.device)
        post(msg.SampleStarted(path, r.prompt))
        count, started = 0, time.perf_counter()
        tokens = stream(model, r.prompt, r.tokens, r.temperature, r.top_k, r.seed, stop=stop)
        for token in tokens:
            count += 1
            post(msg.SampleToken(token.text, token.prob))
        post(msg.SampleFinished(count, time.perf_counter() - started, stop.is_set()))
        return count

    return job


def answering(
    run_path: str, question: str, kinds: Sequence[str], seed: int, where: RunRequest
) -> Job:
    """The run's answer to a chat question from each checkpoint in `kinds` (best: "before",
    sft: "after")."""

    def job(post: Post, stop: StopRequest) -> None:
        from lal_core.runs import resolve_checkpoint
        from lal_core.sampling import load_for_sampling
        from lal_core.sft import chat

        for kind in kinds:
            path = resolve_checkpoint(run_path, kind, where.runs_dir)
            model = load_for_sampling(path, where.backend, where.device)
            reply = chat(model, question, max_new_tokens=ANSWER_TOKENS, seed=seed)
            text = reply.text or "(nothing)"
            if not reply.ended:
                text += "  [no <|end|>]"
            post(msg.SFTAnswer("before" if kind == "best" else "after", question, text))

    return job


def counting(path: str | None) -> Job:
    """Tokenise the corpus (or read its cached tokens) and post its size."""

    def job(post: Post, stop: StopRequest) -> None:
        from lal_core.data import load_corpus, resolve_corpus

        corpus = load_corpus(resolve_corpus(path, download=False))
        stats = msg.CorpusStats(corpus.path, len(corpus.tokens), len(corpus.train), len(corpus.val))
        post(msg.CorpusInfo(path, stats))

    return job
