"""The engine work the dashboard runs as jobs (`lal_tui.work.jobs.JobRunner`) for its panes:
sample, answer a chat question, count a corpus, report on a run (`lal report`, a process of its
own), save a run's curves as a picture. Following a run is `lal_tui.work.following`'s.

Each factory returns a `job(post, stop)` that only calls the engine's API and posts messages
(`lal_tui.work.messages`) to the pane that asked. Engine modules that import torch are imported
inside the job, on its thread, so the dashboard shows at once instead of waiting for torch to
import.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lal_core.errors import LalError
from lal_core.runs.events import StopRequest
from lal_core.runs.folder import RunDir
from lal_core.runs.follow import POLL_SECONDS
from lal_core.runs.records import CorpusInfo
from lal_core.training.request import RunRequest
from lal_tui.work import messages as msg
from lal_tui.work.jobs import Job, Post
from lal_tui.work.launching import RUN_NICENESS

ANSWER_TOKENS = 60


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
    samples: int = 1  # more than one: drawn as one batch, shown as each ends, with figures


class ModelCache:
    """The checkpoint last loaded for sampling, kept while its file is unchanged: generating
    again from the same run should not wait for the load."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._model: object = None

    def get(self, path: Path, backend: str, device: str | None) -> object:
        from lal_core.generation.sampling import load_for_sampling

        key = (str(path), path.stat().st_mtime_ns, backend, device)
        with self._lock:
            if key != self._key:
                self._model, self._key = load_for_sampling(path, backend, device), key
            return self._model


def sampling(request: SampleRequest, where: RunRequest, models: ModelCache) -> Job:
    """Stream tokens from a checkpoint: one SampleToken per token, then SampleFinished. With
    several samples, one SampleEnded as each sample ends instead, then SampleFigures."""

    def job(post: Post, stop: StopRequest) -> int:
        from lal_core.generation.controls import Controls
        from lal_core.generation.sampling import Generation, check_tokens
        from lal_core.runs.folder import resolve_checkpoint

        r = request
        controls = Controls(r.temperature, r.top_k).check()
        check_tokens(r.tokens)
        path = resolve_checkpoint(r.ref, r.kind, where.runs_dir)
        model = models.get(path, where.backend, where.device)
        generation = Generation(model, r.prompt, r.tokens, controls, r.samples, r.seed, stop=stop)
        post(msg.SampleStarted(path, r.prompt, r.samples))
        count, started, shown = 0, time.perf_counter(), set()

        def show_ended() -> None:
            for row, sample in enumerate(generation.samples):
                if sample.ended and row not in shown:
                    shown.add(row)
                    post(msg.SampleEnded(row, sample.seed, sample.text))

        for token in generation:
            count += token.token >= 0  # -1: only the text a cut-short sample held back
            if r.samples == 1:
                post(msg.SampleToken(token.text, token.prob))
            else:
                show_ended()
        if r.samples > 1:
            show_ended()
        post(msg.SampleFinished(count, time.perf_counter() - started, stop.is_set()))
        if r.samples > 1 and not stop.is_set():
            post(msg.SampleFigures(sample_figures(path, generation.samples)))
        return count

    return job


def sample_figures(checkpoint: Path, samples: list) -> str:
    """The samples' quality figures in one line (memorisation where the run's corpus is at
    hand)."""
    from lal_core.data.tokenizer import encode
    from lal_core.training.request import record_corpus
    from lal_core.writing.figures import figures_of
    from lal_core.writing.verbatim import VerbatimIndex

    index = None
    run = RunDir(checkpoint.parent)
    if run.run_json.is_file():
        try:
            index = VerbatimIndex.for_corpus(record_corpus(run.read()))
        except LalError:
            index = None  # the corpus is gone: the figures without memorisation
    f = figures_of([encode(s.text) for s in samples], index)
    parts = [
        f"distinct-2 {f.distinct_2:.2f}" if f.distinct_2 is not None else "",
        f"repeated 4-grams {f.repeated_4:.2f}" if f.repeated_4 is not None else "",
        f"in a loop {f.looping}/{f.samples}",
        f"memorised 8-grams {f.memorised_8:.2f}" if f.memorised_8 is not None else "",
        f"invented words {f.invented_words:.2f}" if f.invented_words is not None else "",
    ]
    return " · ".join(p for p in parts if p)


PROGRESS = re.compile(r"^\[(\d+)/(\d+)\] (.*)$")  # `lal report`'s progress lines, on stderr


def reporting(path: Path) -> Job:
    """`lal report` on a run (best against final where it has both), in a process of its own,
    niced, so the dashboard keeps its keys: its progress as ReportProgress, then ReportDone once
    the run's report.json is written. Stopping the job stops the report; nothing is saved."""

    def job(post: Post, stop: StopRequest) -> bool:
        run = RunDir(path)
        kinds = [k for k in ("best", "final") if run.checkpoint(k).is_file()]
        if not kinds:
            raise LalError(f"run {path.name} has no checkpoint to report on yet")
        argv = [sys.executable, "-m", "lal_core.cli", "report", str(path), "--checkpoint", *kinds]
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, child.pid, RUN_NICENESS)
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            assert child.stderr is not None
            for line in child.stderr:
                lines.put(line.rstrip("\n"))
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        said: list[str] = []
        while True:
            if stop.is_set():
                child.terminate()  # `lal report` stops at its next token: nothing written
                child.wait()
                return False
            try:
                line = lines.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if line is None:
                break
            said.append(line)
            if match := PROGRESS.match(line):
                done, total, what = match.groups()
                post(msg.ReportProgress(path, int(done), int(total), what))
        if child.wait() != 0:
            errors = [x for x in said if x.startswith("lal: error: ")]
            raise LalError(errors[-1].removeprefix("lal: error: ") if errors else said[-1])
        unsaved = [x for x in said if "report not saved" in x]
        if unsaved:
            raise LalError(unsaved[-1].split("report not saved: ", 1)[-1])
        post(msg.ReportDone(path))
        return True

    return job


def answering(
    run_path: str, question: str, kinds: Sequence[str], seed: int, where: RunRequest
) -> Job:
    """The run's answer to a chat question from each checkpoint in `kinds` (best: "before",
    sft: "after")."""

    def job(post: Post, stop: StopRequest) -> None:
        from lal_core.generation.sampling import load_for_sampling
        from lal_core.runs.folder import resolve_checkpoint
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
        from lal_core.data.corpus import load_corpus, resolve_corpus

        corpus = load_corpus(resolve_corpus(path, download=False))
        post(msg.CorpusCounted(path, CorpusInfo(**corpus.describe())))

    return job


def saving_picture(paths: Sequence[Path]) -> Job:
    """Draw the runs' loss curves (matplotlib) into curves.png in the first run's folder."""

    def job(post: Post, stop: StopRequest) -> None:
        from lal_core.export.plot import default_picture, read_curves, save_picture

        runs = [RunDir(p) for p in paths]
        post(msg.PictureSaved(save_picture(read_curves(runs), default_picture(runs[0]))))

    return job


def fetch_hint(path: Path) -> str:
    """Over SSH the picture is on the remote machine: the command that copies it to this one."""
    if not os.environ.get("SSH_CONNECTION"):
        return ""
    return f"; it is on {socket.gethostname()}: scp {socket.gethostname()}:{path} ."
