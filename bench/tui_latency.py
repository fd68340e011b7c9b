"""Dashboard latency and overhead, while a real training run goes on.

    uv run python bench/tui_latency.py [--config tiny] [--iters 200] [--eval-interval 100]
                                       [--batch-size 16] [--data PATH] [--presses 30]

1. Trains with the command line (`lal train`, a subprocess) and reads the run's training time
   (the `elapsed` of the last record in its metrics.jsonl).
2. Trains the same config in the dashboard (headless, `App.run_test` at 100x30) and, while it
   runs, sends pane keys (2 <-> 3) the way a terminal's keys arrive (through the driver): the
   latency is the time from the key until the new pane is active ("handled") and until the
   next frame is handed to the terminal ("on screen"). Then reads that run's training time the
   same way.

Prints both, and how much slower training was inside the dashboard. The figures drift on a
shared machine: run it twice, and compare runs made on the same machine only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from textual import events  # noqa: E402

from lal_core.config import TrainConfig, get_model_config  # noqa: E402
from lal_core.flags import RunRequest  # noqa: E402
from lal_tui.app import LalApp  # noqa: E402
from lal_tui.settings import Settings  # noqa: E402


def training_seconds(runs_dir: Path) -> tuple[float, int]:
    """(elapsed of the last metrics record, steps) of the only run under runs_dir."""
    (run,) = [p for p in runs_dir.iterdir() if (p / "run.json").is_file()]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = sum(r["type"] == "step" for r in records)
    return max(r["elapsed"] for r in records), steps


def cli_run(args, runs_dir: Path) -> float:
    cmd = [
        sys.executable, "-m", "lal_core.cli", "train",
        "--config", args.config,
        "--max-iters", str(args.iters),
        "--eval-interval", str(args.eval_interval),
        "--batch-size", str(args.batch_size),
        "--runs-dir", str(runs_dir),
    ]  # fmt: skip
    if args.data:
        cmd += ["--data", args.data]
    if args.device:
        cmd += ["--device", args.device]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return training_seconds(runs_dir)[0]


async def switch_panes(app, frames: list[float], presses: int, while_training: bool):
    """Alternate panes 2 <-> 3; (key handled, new pane on screen) seconds per press."""
    handled, shown = [], []
    rng = random.Random(0)
    target = "sample"
    while len(shown) < presses and (app.running("train") or not while_training):
        key = "3" if target == "sample" else "2"
        # the way a terminal's key arrives: from the driver into the app's queue (the pilot's
        # press() also waits for the process to go idle, which it never is while training)
        event = events.Key(key, key)
        event.set_sender(app)
        t0 = time.perf_counter()
        app._driver.send_message(event)
        while app.active_pane != target:
            await asyncio.sleep(0.001)
        t1 = time.perf_counter()
        handled.append(t1 - t0)
        while not frames or frames[-1] < t1:
            await asyncio.sleep(0.001)
        shown.append(frames[-1] - t0)
        target = "train" if target == "sample" else "sample"
        await asyncio.sleep(rng.uniform(0.1, 0.3))
    return handled, shown


async def dashboard_run(args, runs_dir: Path):
    recipe = TrainConfig(
        max_iters=args.iters, eval_interval=args.eval_interval, batch_size=args.batch_size
    )
    request = RunRequest(
        model_config=get_model_config(args.config),
        train_config=recipe,
        data=args.data,
        device=args.device,
        runs_dir=runs_dir,
    )
    app = LalApp(Settings(request=request))
    async with app.run_test(size=(100, 30)) as pilot:
        # Frames: the app hands each screen update to _display (headless: then drops it).
        frames: list[float] = []
        real_display = app._display

        def display(screen, renderable):
            frames.append(time.perf_counter())
            return real_display(screen, renderable)

        app._display = display
        await app.workers.wait_for_complete()  # the startup probes (torch import, corpus)
        await pilot.pause(0.5)
        idle = await switch_panes(app, frames, 10, while_training=False)
        await pilot.press("t")
        pane = app.query_one("#train-pane")
        while not pane.plot.step_iters and app.running("train"):
            await asyncio.sleep(0.05)
        busy = await switch_panes(app, frames, args.presses, while_training=True)
        await app.jobs.worker("train").wait()
        await pilot.pause(0.2)
    return training_seconds(runs_dir)[0], idle, busy


def ms(values: list[float]) -> str:
    if not values:
        return "no presses (the run ended first; raise --iters)"
    values = sorted(values)
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return (
        f"median {statistics.median(values) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
        f"max {values[-1] * 1000:.1f} ms over {len(values)} presses"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--eval-interval", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--data", default=os.environ.get("LAL_DATA"))
    parser.add_argument("--device", default=None)
    parser.add_argument("--presses", type=int, default=30)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cli_dir, tui_dir = Path(tmp) / "cli", Path(tmp) / "tui"
        cli_s = cli_run(args, cli_dir)
        tui_s, idle, busy = asyncio.run(dashboard_run(args, tui_dir))

    print(f"config {args.config}, {args.iters} iterations, batch {args.batch_size}, "
          f"eval every {args.eval_interval}")  # fmt: skip
    print(f"training time, command line: {cli_s:.2f} s")
    print(f"training time, dashboard:    {tui_s:.2f} s ({(tui_s / cli_s - 1) * 100:+.1f}%)")
    print(f"idle app, key to pane switch handled: {ms(idle[0])}")
    print(f"idle app, key to new pane on screen:  {ms(idle[1])}")
    print(f"training, key to pane switch handled: {ms(busy[0])}")
    print(f"training, key to new pane on screen:  {ms(busy[1])}")


if __name__ == "__main__":
    main()
