"""Snapshots of each dashboard pane at 100x30, with fixed data and no clock in sight.

Runs are written as files with fixed timestamps (shown in UTC), the training pane is fed
synthetic engine events, the backend probe and corpus count are fixed: the SVGs depend on
nothing but the code. Update them with `pytest tests/test_tui_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import pytest

from lal_core.backends import BackendInfo
from lal_core.model.config import MODEL_CONFIGS
from lal_core.model.recipe import TrainConfig
from lal_core.runs import events as ev
from lal_core.runs.records import CorpusInfo, Figures
from lal_core.training.request import RunRequest
from lal_tui.app import LalApp
from lal_tui.panes.sample import SamplePane
from lal_tui.panes.train import REDRAW_SECONDS, TrainPane
from lal_tui.screens.confirm import QuitScreen
from lal_tui.settings import Settings
from lal_tui.work.messages import CorpusCounted, SampleStarted, SampleToken, TrainEvent

# Pictures guard the layout, not behaviour (tests/test_tui.py): the full suite runs them.
pytestmark = pytest.mark.slow

SIZE = (100, 30)
CREATED = 1767268800.0  # 2026-01-01 12:00 UTC
# the original write-up's example run (docs/recipe.md, Training): (iter, train, val)
SPEC_EVALS = [
    (0, 10.8746, 10.8710),
    (250, 4.5904, 5.1055),
    (500, 3.9147, 4.7649),
    (750, 3.4834, 4.7376),
    (1000, 3.0431, 4.8332),
    (1250, 2.6174, 4.9939),
    (1500, 2.1891, 5.1886),
    (1750, 1.7713, 5.4638),
]


def step_loss(it: int) -> float:
    return 2.0 + 8.8 * math.exp(-it / 90) + 0.15 * math.sin(it / 7.0) - it / 2000


def lr_at(it: int) -> float:
    return 3e-4 * min(1.0, (it + 1) / 100) * 0.5 * (1 + math.cos(math.pi * it / 5000))


def write_run(root: Path, run_id: str, backend: str, evals, status: str, offset: float) -> Path:
    path = root / run_id
    path.mkdir(parents=True)
    best = min(evals, key=lambda e: e[2])
    info = {
        "format_version": 1,
        "run_id": run_id,
        "created": CREATED + offset,
        "model_config": MODEL_CONFIGS["tiny"].to_dict(),
        "train_config": TrainConfig().to_dict(),
        "backend": backend,
        "device": "cpu" if backend == "torch" else "mlx/cpu",
        "n_params": 7_242_240,
        "iteration": evals[-1][0],
        "best_val": best[2],
        "best_iter": best[0],
        "status": status,
        "process": {"pid": 1, "host": "elsewhere"},
    }
    (path / "run.json").write_text(json.dumps(info))
    # complete records, as the engine writes them (a reader may skip a line missing a key)
    records = [
        {
            "type": "step",
            "iter": it,
            "loss": step_loss(it),
            "lr": lr_at(it),
            "tok_s": 2000.0,
            "elapsed": it * 3.2,
        }
        for it in range(0, evals[-1][0], 5)
    ] + [
        {
            "type": "eval",
            "iter": it,
            "train_loss": t,
            "val_loss": v,
            "lr": lr_at(it),
            "best": False,
            "tok_s": 2000.0,
            "elapsed": it * 3.2,
            "eval_s": 1.0,
        }
        for it, t, v in evals
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def snap_app(isolated_home, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    runs = isolated_home / "checkpoints"
    write_run(runs, "20260101-120000-tiny-torch", "torch", SPEC_EVALS, "early_stopped", 0)
    mlx_evals = [(it, t + 0.03, v - 0.01 + 0.002 * i) for i, (it, t, v) in enumerate(SPEC_EVALS)]
    write_run(runs, "20260101-140000-tiny-mlx", "mlx", mlx_evals[:6], "stopped", 7200)

    monkeypatch.setattr(
        "lal_tui.panes.setup.probe_backends",
        lambda: [
            BackendInfo("torch", ("cpu",), "torch 2.x: cpu; default cpu"),
            BackendInfo("mlx", (), "mlx: not installed; get it with: uv sync --extra mlx"),
        ],
    )

    def counting(path):
        info = CorpusInfo(
            path="data/tinyshakespeare/input.txt",
            tokens=338_025,
            train_tokens=304_222,
            val_tokens=33_803,
        )
        return lambda post, stop: post(CorpusCounted(path, info))

    monkeypatch.setattr("lal_tui.work.tasks.counting", counting)
    request = RunRequest(model_config=MODEL_CONFIGS["tiny"], runs_dir=runs)
    yield LalApp(Settings(request=request))
    time.tzset()


def test_setup_pane(snap_app, snap_compare):
    async def run_before(pilot):
        await pilot.press("1")
        await pilot.pause(0.2)

    assert snap_compare(snap_app, terminal_size=SIZE, run_before=run_before)


# The samples drawn after each eval (the same prompts every time), as the model learns to write:
# per eval, each sample's text and the writing figures (distinct-2, repeated 4-grams, samples in
# a loop, memorised 8-grams).
PROMPTS = ("ROMEO:\n", "First Citizen:\nWe are accounted poor", "KING RICHARD II:\n")
SAMPLE_TEXTS = {
    0: ("the the, the the,", " citizens the the the the the", "and and and the\n"),
    250: (
        "I will not be the king,\nAnd I will not be the king.\n",
        " citizens, the patricians good.\nWhat authority surfeits on",
        "What is the king? what is the king?\n",
    ),
}
LATER_TEXT = (
    "O, she doth teach the torches to burn bright!\nIt seems she hangs upon the cheek of night",
    " citizens, the patricians good. What authority surfeits on would relieve us: if they "
    "would yield us but the superfluity, while it were wholesome, we might guess they "
    "relieved us humanely; but they think we are too dear",
    "Now is the winter of our discontent\nMade glorious summer by this sun of York;",
)
HELD_OUT = Figures(
    samples=3,
    distinct_1=0.78,
    distinct_2=0.96,
    repeated_4=0.02,
    looping=0,
    memorised_8=0.05,
    longest=9,
    longest_text="the winter of our discontent",
)


def figures_at(k: int) -> Figures:
    """The k-th eval's samples' figures: repetition falls, then memorisation climbs."""
    return Figures(
        samples=3,
        distinct_1=min(0.3 + 0.1 * k, 0.8),
        distinct_2=min(0.25 + 0.12 * k, 0.97),
        repeated_4=max(0.6 - 0.15 * k, 0.03),
        looping=max(3 - k, 0),
        memorised_8=min(0.02 * k * k, 0.6),
        longest=4 + 3 * k,
        longest_text="the king",
    )


def synthetic_samples(k: int, it: int, pieces: int = 0) -> list:
    """The sample events after the k-th eval (at iteration `it`): whole, or (`pieces` > 0) cut
    off after that many pieces, as if still being drawn."""
    texts = SAMPLE_TEXTS.get(it, LATER_TEXT)
    controls = "temperature 0.8, top-k 200"
    events: list = [
        ev.SamplesStarted(iteration=it, prompts=PROMPTS, tokens=64, seed=1337, controls=controls)
    ]
    # a piece per word, with the space or newline before it
    drawn = [(i, word) for i, text in enumerate(texts) for word in re.findall(r"\s*\S+|\s+$", text)]
    for n, (i, piece) in enumerate(drawn):
        if pieces and n == pieces:
            return events
        events.append(ev.SampleText(iteration=it, index=i, text=piece))
    done = ev.SamplesDone(
        iteration=it,
        prompts=PROMPTS,
        texts=texts,
        figures=figures_at(k),
        held_out=HELD_OUT,
        seconds=1.5,
    )
    return [*events, done]


def run_started() -> ev.RunStarted:
    return ev.RunStarted(
        run_id="20260101-120000-tiny-torch",
        run_dir=Path("checkpoints/20260101-120000-tiny-torch"),
        kind="train",
        model_config=MODEL_CONFIGS["tiny"],
        backend="torch",
        device="cpu",
        n_params=7_242_240,
        max_steps=TrainConfig().max_iters,
        header="run 20260101-120000-tiny-torch | config tiny (7.24M params) | "
        "Device: torch/cpu | data input.txt (304,222 train / 33,803 val tokens)",
        train_config=TrainConfig(),
    )


def synthetic_run() -> list:
    """The write-up's example run, as its log would replay it: steps, evals and their samples
    (the last eval's still being drawn), then its early stop."""
    events: list = [run_started()]
    best_val, best_iter = math.inf, 0
    evals = dict((it, (t, v)) for it, t, v in SPEC_EVALS)
    for it in range(0, 1751):
        elapsed = it * 3.2
        if it in evals:
            train, val = evals[it]
            is_best = val < best_val
            if is_best:
                best_val, best_iter = val, it
            line = (
                f"iter {it:<4} | train {train:<7.4f} | val {val:<7.4f} | lr {lr_at(it):.2e} | "
                f"2,000 tok/s | {elapsed / 60:.1f} min{' *' if is_best else ''}"
            )
            events.append(
                ev.EvalDone(
                    iteration=it,
                    train_loss=train,
                    val_loss=val,
                    lr=lr_at(it),
                    is_best=is_best,
                    best_val=best_val,
                    best_iter=best_iter,
                    tokens_per_sec=2000.0,
                    elapsed=elapsed,
                    eval_seconds=1.0,
                    line=line,
                )
            )
            # the last eval's samples are still being drawn: the second one streams
            k = sorted(evals).index(it)
            events += synthetic_samples(k, it, pieces=30 if it == 1750 else 0)
        if it == 1750:
            events.append(
                ev.EarlyStopped(
                    iteration=it,
                    best_iter=best_iter,
                    best_val=best_val,
                    patience=4,
                    line="early stop: no val improvement for 4 evals (best @ iter 750: 4.7376)",
                )
            )
            break
        tok_s = 2000.0 + 150 * math.sin(it / 40)
        events.append(
            ev.StepDone(
                iteration=it,
                loss=step_loss(it),
                lr=lr_at(it),
                tokens_per_sec=tok_s,
                elapsed=elapsed,
            )
        )
    return events


async def show_synthetic_run(pilot) -> TrainPane:
    """The Train pane on screen, sent every event of `synthetic_run`."""
    await pilot.press("2")
    pane = pilot.app.query_one(TrainPane)
    for event in synthetic_run():
        pane.post_message(TrainEvent(event))
    return pane


def test_train_pane(snap_app, snap_compare):
    async def run_before(pilot):
        await show_synthetic_run(pilot)
        await pilot.pause(REDRAW_SECONDS + 0.5)

    assert snap_compare(snap_app, terminal_size=SIZE, run_before=run_before)


def test_train_pane_writing_at_80x24(snap_app, snap_compare):
    # w: the writing figures over the evals, the held-out text's dashed; [: the eval before's
    # samples, while the newest is still being drawn
    async def run_before(pilot):
        await show_synthetic_run(pilot)
        await pilot.pause(0.3)
        await pilot.press("w", "left_square_bracket")
        await pilot.pause(REDRAW_SECONDS + 0.5)

    assert snap_compare(snap_app, terminal_size=(80, 24), run_before=run_before)


def test_sample_pane(snap_app, snap_compare):
    pieces = [
        ("\n", 0.61),
        ("Come", 0.04),
        (",", 0.33),
        (" sir", 0.12),
        (",", 0.41),
        (" I", 0.22),
        (" will", 0.18),
        (" not", 0.09),
        (" be", 0.27),
        (" the", 0.08),
        (" king", 0.02),
        (" of", 0.51),
        (" the", 0.44),
        (" world", 0.03),
        (".", 0.38),
        ("\n", 0.47),
        ("\n", 0.83),
        ("JUL", 0.01),
        ("IET", 0.97),
        (":", 0.99),
        ("\n", 0.72),
        ("O", 0.06),
        (",", 0.2),
        (" my", 0.15),
        (" lord", 0.31),
        ("!", 0.07),
    ]

    async def run_before(pilot):
        await pilot.press("3")
        pane = pilot.app.query_one(SamplePane)
        run = Path("checkpoints/20260101-120000-tiny-torch")
        pane.begin(SampleStarted(run / "best.safetensors", "ROMEO:"))
        for text, prob in pieces:
            pane.add_token(SampleToken(text, prob))
        await pilot.press("v", "v")  # the probability view
        await pilot.pause(0.2)

    assert snap_compare(snap_app, terminal_size=SIZE, run_before=run_before)


def test_sft_pane(snap_app, snap_compare):
    async def run_before(pilot):
        await pilot.press("4")
        await pilot.pause(0.4)

    assert snap_compare(snap_app, terminal_size=SIZE, run_before=run_before)


def test_runs_pane_overlay(snap_app, snap_compare):
    async def run_before(pilot):
        await pilot.press("5", "space", "down", "space", "c")
        await pilot.pause(0.4)

    assert snap_compare(snap_app, terminal_size=SIZE, run_before=run_before)


def test_runs_pane_open(snap_app, snap_compare):
    async def run_before(pilot):
        await pilot.press("5", "down", "enter")
        await pilot.pause(0.4)

    assert snap_compare(snap_app, terminal_size=SIZE, run_before=run_before)


def test_quit_dialog(snap_app, snap_compare):
    # what q asks while a run goes on, at 80x24: stop it first, leave it running, or cancel
    async def run_before(pilot):
        await pilot.press("5")
        pilot.app.push_screen(QuitScreen())
        await pilot.pause(0.4)

    assert snap_compare(snap_app, terminal_size=(80, 24), run_before=run_before)
