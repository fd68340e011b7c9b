"""Shared fixtures: an isolated LAL_HOME per test, the offline tokenizer, small corpora.

The offline files come from ../shared/data when it exists (this workplace and CI), or from
TIKTOKEN_CACHE_DIR / LAL_TEST_CORPUS set by the caller. Nothing in lal itself depends on them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lal_core.generation.controls import Controls
from lal_core.model.config import ModelConfig
from lal_core.model.recipe import TrainConfig
from lal_core.runs import events as ev

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

if "TIKTOKEN_CACHE_DIR" not in os.environ and (SHARED_DATA / "tiktoken-cache").is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED_DATA / "tiktoken-cache")

# A model small enough that a training step takes milliseconds; the 50,257-wide head dominates.
MICRO = ModelConfig("micro", n_layer=2, n_head=2, n_embd=32, block_size=32)


# A short recipe for it: 12 steps, evals at 0, 4, 8 and 12; and one that runs until stopped.
def one_short_sample(cfg: TrainConfig) -> TrainConfig:
    """The recipe drawing one 8-token sample after each eval: for runs whose samples are not
    what a test looks at (those are tested in test_eval_samples.py), so they cost no time."""
    return replace(cfg, eval_samples=1, eval_sample_tokens=8)


FAST = one_short_sample(
    TrainConfig(max_iters=12, eval_interval=4, batch_size=2, lr=3e-3, warmup_iters=2)
)
LONG = one_short_sample(TrainConfig(max_iters=100_000, eval_interval=50_000, batch_size=2))


def wait_for(condition, timeout: float = 60.0, what: str = "the condition"):
    """Poll `condition()` until it gives something true, and return that; an AssertionError
    after `timeout` seconds (or whatever `condition` itself asserts)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def shakespeare_path() -> Path | None:
    candidates = [os.environ.get("LAL_TEST_CORPUS"), SHARED_DATA / "tinyshakespeare" / "input.txt"]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    return None


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Every test gets its own data/ and checkpoints/; LAL_DATA from outside never leaks in."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("LAL_HOME", str(home))
    monkeypatch.delenv("LAL_DATA", raising=False)
    monkeypatch.delenv("LAL_RUNS", raising=False)
    return home


@pytest.fixture(scope="session")
def shakespeare() -> Path:
    path = shakespeare_path()
    if path is None:
        pytest.skip("TinyShakespeare not found (set LAL_TEST_CORPUS)")
    return path


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory, shakespeare) -> Path:
    """The first 60,000 characters of TinyShakespeare: about 15k tokens, 1.5k of them val."""
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text(shakespeare.read_text()[:60_000])
    return path


@pytest.fixture(scope="session")
def short_corpus(tmp_path_factory, shakespeare) -> Path:
    """The first 12,000 characters of TinyShakespeare: about 3.3k tokens, two of tiny's
    128-token windows of val, so an eval takes a few forward passes. For runs that only need to
    run (signals, kills, the command line), not to learn."""
    path = tmp_path_factory.mktemp("corpus") / "short.txt"
    path.write_text(shakespeare.read_text()[:12_000])
    return path


@pytest.fixture
def micro_cfg() -> ModelConfig:
    return MICRO


def random_tokens(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 50257, size=shape, dtype=np.int64)


def run_cli(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    """`lal ARGS` in a subprocess, with this test's environment (its LAL_HOME included)."""
    return subprocess.run(
        [sys.executable, "-m", "lal_core.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def call_main(capsys, *args) -> subprocess.CompletedProcess:
    """`lal ARGS` in this process, through `lal_core.cli.main`: its exit code (a malformed
    command line ends argparse in SystemExit, whose code is taken) and what it printed, as
    `run_cli` gives them. Output printed before the call is dropped."""
    from lal_core.cli import main

    capsys.readouterr()
    argv = [str(a) for a in args]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["lal", *argv], code, out, err)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, words: str) -> None:
    """The CLI's contract for a user error: exit `code`, one line on stderr naming the
    problem (`words`), no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, (result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lal: error: ") and words in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def stop_after(step: int, stop: ev.StopRequest):
    """An event callback that asks the run to stop once step `step` is done."""

    def on_event(event):
        if isinstance(event, ev.StepDone) and event.iteration == step:
            stop.set("test")

    return on_event


def next_token_kl(a, b, tokens: list[int]) -> float:
    """The largest KL(a || b) of two backends' next-token distributions: after the first half
    of `tokens` (a prompt's forward), then after each of the rest fed one at a time (the KV
    cache's one-token steps, which may run on other weights than the prompt)."""
    import torch

    def kl(logits_a, logits_b) -> float:
        p = torch.log_softmax(logits_a.float(), -1)
        q = torch.log_softmax(logits_b.float(), -1)
        return torch.sum(p.exp() * (p - q)).item()

    half = len(tokens) // 2
    a.start_generation(1)
    b.start_generation(1)
    prompt = np.array([tokens[:half]])
    worst = kl(a.prefill(prompt)[0], b.prefill(prompt)[0])
    for token in tokens[half:]:
        step = np.array([token])
        worst = max(worst, kl(a.extend(step)[0], b.extend(step)[0]))
    return worst


# The sampling controls every backend's batches are checked under.
EACH_CONTROL = pytest.mark.parametrize(
    "controls",
    [
        Controls(temperature=0),
        Controls(temperature=1.0, top_k=8),
        Controls(temperature=1.2, top_k=None, top_p=0.9, repetition_penalty=1.3),
    ],
    ids=["greedy", "seeded top-k", "top-p and penalty"],
)


class ScriptedBackend:
    """Wraps a backend but draws a fixed token sequence (the same in every row), to test what
    is built on the draws; remembers the first context it ran and how many steps it drew."""

    def __init__(self, inner, tokens):
        self.inner, self.tokens, self.cfg = inner, list(tokens), inner.cfg
        self.drawn = 0
        self.prompt = None

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def prefill(self, contexts, use_cache=True):
        if self.prompt is None:
            self.prompt = [int(t) for t in contexts[0]]
        return self.inner.prefill(contexts, use_cache)

    def candidates(self, logits, top_k, repetition_penalty, with_lse):
        from lal_core.backends.base import Candidates

        rows = logits.shape[0]
        self.drawn += 1
        token = self.tokens.pop(0)
        return Candidates(
            np.zeros((rows, 1), np.float32), np.full((rows, 1), token), np.zeros(rows)
        )
