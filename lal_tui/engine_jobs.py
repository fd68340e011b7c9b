"""The engine jobs the dashboard runs with `lal_tui.jobs.JobRunner`: follow a run (training
or fine-tuning, each a process of its own: `lal_tui.launcher`), sample, answer a chat question,
count a corpus.

Each factory returns a `job(post, stop)` that only calls the engine's API and posts messages.
Engine modules that import torch are imported inside the job, on its thread, so the dashboard
shows at once instead of waiting for torch to import.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lal_core.errors import LalError
from lal_core.events import RunFailed, RunFinished, StopRequest
from lal_core.flags import RunRequest
from lal_core.follow import POLL_SECONDS, RunFollower
from lal_core.runs import RunDir
from lal_tui import messages as msg
from lal_tui.jobs import Job, Post
from lal_tui.launcher import Launch

ANSWER_TOKENS = 60


def following(path: Path, job: str = "train", launch: Launch | None = None) -> Job:
    """Follow one job's log ("train" or "sft") in a run folder: its events, past and live, as
    TrainEvent or SFTEvent, until the run ends (or the job is stopped: the run goes on).
    `launch`: the run was started here; its log is read once it has begun to write it, and
    if it ends without a word, the last line of its console output is the error."""
    wrap = msg.TrainEvent if job == "train" else msg.SFTEvent

    def follow(post: Post, stop: StopRequest):
        if launch is not None and not wait_for_session(launch, stop):
            if launch.running():
                return None  # no longer followed before it began: it goes on
            failure = None if launch.interrupted else launch.failure()
            launch.discard()
            if failure is not None:
                raise LalError(failure)
            return None
        starting = launch.running if launch is not None else None
        run = RunDir(path)
        follower = RunFollower(run, job, starting=starting)
        seen, ended = 0, None
        for event in follower.events(stop=stop):
            seen, ended = seen + 1, event
            post(wrap(event))
        if stop.is_set():
            return None  # no longer followed: the run goes on
        if not seen:
            what = "training" if job == "train" else "fine-tuning"
            raise LalError(
                f"run {path.name} has no {what} events logged (a run from an older lal?)"
            )
        return ended if isinstance(ended, RunFinished | RunFailed) else None

    return follow


def wait_for_session(launch: Launch, stop: StopRequest) -> bool:
    """Wait until the launched run logs its first event (True), or ends or `stop` is set first."""
    while not launch.session_begun():
        if not launch.running():
            return launch.session_begun()
        if stop.is_set():
            return False
        time.sleep(POLL_SECONDS)
    return True


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


def saving_picture(paths: Sequence[Path]) -> Job:
    """Draw the runs' loss curves (matplotlib) into curves.png in the first run's folder."""

    def job(post: Post, stop: StopRequest) -> None:
        from lal_core.plot import default_picture, read_curves, save_picture

        runs = [RunDir(p) for p in paths]
        post(msg.PictureSaved(save_picture(read_curves(runs), default_picture(runs[0]))))

    return job
