"""Dashboard latency while a run trains as its own process, and what following it costs.

    uv run python bench/tui_latency.py [--config tiny] [--iters 200] [--eval-interval 100]
                                       [--batch-size 16] [--data PATH] [--device D] [--presses 30]
                                       [--sample-presses 20]
    uv run python bench/tui_latency.py --during-report   # keys while the Runs pane's report runs

1. Trains with the command line (`lal train`, a subprocess) and reads its training tokens/s
   from the run's metrics.jsonl (tokens trained over the training time, the `elapsed` of its
   last record; and the median of its steps' own tok/s); once before the dashboard's run and
   once after, and compares against the mean of the two (the machine drifts).
2. Starts the same run from the dashboard (headless, `App.run_test` at 100x30) as `t` does:
   a `lal train` child process of its own, which the dashboard follows through the run folder.
   While it trains, sends pane keys (2 <-> 3) the way a terminal's keys arrive (through the
   driver): the latency is the time from the key until the new pane is active ("handled") and
   until the next frame is handed to the terminal ("on screen"). The dashboard's follower is
   timed too: for each step, from the run's wall-clock time of its log line (the step's end,
   `RunFollower.last_time`) to the moment the follower yielded it. Then, for the rest of the
   run, keys are sent only while the samples drawn after an eval stream into the Train pane
   (hundreds of pieces a second; `--sample-presses` of them at most): a lower
   `--eval-interval` gives more such windows.
3. Reads the child's training tokens/s the same way as in 1, and the CPU time the dashboard's
   own process took meanwhile (what it took from the run, on a machine of few cores).

Prints the medians and p95s, and how the dashboard's child trained against `lal train`. The
figures drift on a shared machine: run it twice, and compare runs made on the same machine only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from textual import events  # noqa: E402

from lal_core.cli.flags import request_argv  # noqa: E402
from lal_core.model.config import get_model_config  # noqa: E402
from lal_core.model.recipe import TrainConfig
from lal_core.runs.events import StepDone  # noqa: E402
from lal_core.runs.folder import RunDir  # noqa: E402
from lal_core.runs.follow import RunFollower  # noqa: E402
from lal_core.training.request import RunRequest
from lal_tui.app import LalApp  # noqa: E402
from lal_tui.settings import Settings  # noqa: E402
from lal_tui.work import following  # noqa: E402
from lal_tui.work.launching import ProcessLauncher  # noqa: E402


def training_rate(runs_dir: Path) -> tuple[float, float, int]:
    """(tokens/s over the training time, median step tok/s, steps) of the only run there."""
    (run,) = [RunDir(p) for p in runs_dir.iterdir() if (p / "run.json").is_file()]
    record = run.read()
    steps, evals = run.curves()
    seconds = max(r.elapsed for r in (*steps, *evals))
    tokens = len(steps) * record.train_config.batch_size * record.model_config.block_size
    rate = tokens / seconds if seconds > 0 else 0.0
    return rate, statistics.median(r.tokens_per_sec for r in steps[1:] or steps), len(steps)


def bench_request(args, runs_dir: Path) -> RunRequest:
    """The run both sides train: `lal train` and the dashboard's child get the same flags."""
    recipe = TrainConfig(
        max_iters=args.iters, eval_interval=args.eval_interval, batch_size=args.batch_size
    )
    return RunRequest(
        model_config=get_model_config(args.config),
        train_config=recipe,
        data=args.data,
        device=args.device,
        runs_dir=runs_dir,
    )


def cli_run(args, runs_dir: Path) -> tuple[float, float, int]:
    argv = request_argv(bench_request(args, runs_dir))
    cmd = [sys.executable, "-m", "lal_core.cli", "train", *argv]  # as ProcessLauncher.train
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return training_rate(runs_dir)


class TimedFollower(RunFollower):
    """The dashboard's follower, timing each step from its end in the run to its yield here."""

    delays: list[float] = []

    def events(self, stop=None):
        for event in super().events(stop):
            if isinstance(event, StepDone) and self.last_time is not None:
                TimedFollower.delays.append(time.time() - self.last_time)
            yield event


async def switch_panes(
    app, frames: list[float], presses: int, while_running: str | None, when=None
):
    """Alternate panes 2 <-> 3 (while the job group `while_running` runs, if one is named; and
    only while `when()`, if given); (key handled, new pane on screen) seconds per press."""
    handled, shown = [], []
    rng = random.Random(0)
    target = "sample"
    while len(shown) < presses and (while_running is None or app.running(while_running)):
        if when is not None and not when():
            await asyncio.sleep(0.01)
            continue
        key = "3" if target == "sample" else "2"
        # the way a terminal's key arrives: from the driver into the app's queue (the pilot's
        # press() also waits for the process to go idle, which it never is while following)
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


async def dashboard_run(args, runs_dir: Path, launcher: ProcessLauncher):
    request = bench_request(args, runs_dir)
    app = LalApp(Settings(request=request), launcher=launcher)
    async with app.run_test(size=(100, 30)) as pilot:
        frames = watch_display(app)
        await app.workers.wait_for_complete()  # the startup probes (torch import, corpus)
        await pilot.pause(0.5)
        idle = await switch_panes(app, frames, 10, None)
        await pilot.press("t")  # a `lal train` child; the Train pane follows its folder
        pane = app.query_one("#train-pane")
        while not pane.plot.step_iters and app.running("train"):
            await asyncio.sleep(0.05)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        busy = await switch_panes(app, frames, args.presses, "train")

        def streaming() -> bool:  # the Train pane is taking in an eval's samples
            newest = pane.samples.book.newest()
            return newest is not None and newest.status == "drawing"

        sampling = await switch_panes(app, frames, args.sample_presses, "train", streaming)
        await app.jobs.worker("train").wait()  # until the child has saved and exited
        share = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        drawn = len(pane.samples.book)
        await pilot.pause(0.2)
    return training_rate(runs_dir), idle, busy, sampling, drawn, share


def watch_display(app) -> list[float]:
    """When each frame is handed to the terminal (headless: then dropped)."""
    frames: list[float] = []
    real_display = app._display

    def display(screen, renderable):
        frames.append(time.perf_counter())
        return real_display(screen, renderable)

    app._display = display
    return frames


async def report_latency(args, runs_dir: Path) -> tuple[list[float], list[float], float]:
    """Keys while the Runs pane's `e` report (a `lal report` child) draws its samples."""
    request = bench_request(args, runs_dir)
    app = LalApp(Settings(request=request), launcher=ProcessLauncher())
    async with app.run_test(size=(100, 30)) as pilot:
        frames = watch_display(app)
        await app.workers.wait_for_complete()
        await pilot.press("5", "e")
        while not app.running("report"):
            await asyncio.sleep(0.05)
        await asyncio.sleep(8)  # the child imports torch and loads the model first
        started = time.perf_counter()
        handled, shown = await switch_panes(app, frames, args.presses, "report")
        await app.jobs.worker("report").wait()
        seconds = time.perf_counter() - started
    return handled, shown, seconds


def ms(values: list[float], what: str = "presses") -> str:
    if not values:
        return f"no {what} (the run ended first; raise --iters)"
    values = sorted(values)
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return (
        f"median {statistics.median(values) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
        f"max {values[-1] * 1000:.1f} ms over {len(values)} {what}"
    )


def run_both(args) -> tuple:
    following.RunFollower = TimedFollower  # the dashboard's follow job builds this one
    launcher = ProcessLauncher()
    with tempfile.TemporaryDirectory() as tmp:
        # lal train before and after the dashboard's run: their mean cancels the machine's drift
        before = cli_run(args, Path(tmp) / "cli-before")
        try:
            tui, *keys = asyncio.run(dashboard_run(args, Path(tmp) / "tui", launcher))
        finally:  # a child left by a failure goes with the bench
            for child in launcher.children:
                if child.poll() is None:
                    os.killpg(child.pid, signal.SIGTERM)
                child.wait()
        after = cli_run(args, Path(tmp) / "cli-after")
    cli = tuple((a + b) / 2 for a, b in zip(before, after, strict=True))
    return cli, tui, *keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--eval-interval", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--data", default=os.environ.get("LAL_DATA"))
    parser.add_argument("--device", default=None)
    parser.add_argument("--presses", type=int, default=30)
    parser.add_argument(
        "--sample-presses",
        type=int,
        default=20,
        help="then, keys pressed only while an eval's samples stream in (at most)",
    )
    parser.add_argument(
        "--during-report",
        action="store_true",
        help="instead: train with lal train, then time keys while the Runs pane's report runs",
    )
    args = parser.parse_args()
    if args.during_report:
        with tempfile.TemporaryDirectory() as tmp:
            cli_run(args, Path(tmp))
            handled, shown, seconds = asyncio.run(report_latency(args, Path(tmp)))
        print(f"config {args.config}: keys while `lal report` ran ({seconds:.0f} s of it timed)")
        print(f"report running, key to pane switch handled: {ms(handled)}")
        print(f"report running, key to new pane on screen:  {ms(shown)}")
        return

    cli, tui, idle, busy, sampling, drawn, share = run_both(args)
    print(f"config {args.config}, {args.iters} iterations, batch {args.batch_size}, "
          f"eval every {args.eval_interval}")  # fmt: skip
    for name, (rate, step_rate, steps) in (
        ("lal train (mean of 2):", cli),
        ("dashboard's child:    ", tui),
    ):
        print(f"training, {name} {rate:,.0f} tok/s over the run, median step {step_rate:,.0f} "
              f"tok/s ({steps} steps)")  # fmt: skip
    print(f"dashboard's child against lal train: {(tui[0] / cli[0] - 1) * 100:+.1f}% tok/s")
    print(f"the dashboard's own process meanwhile: {share:.1%} of one core")
    print(f"idle app, key to pane switch handled: {ms(idle[0])}")
    print(f"idle app, key to new pane on screen:  {ms(idle[1])}")
    print(f"training, key to pane switch handled: {ms(busy[0])}")
    print(f"training, key to new pane on screen:  {ms(busy[1])}")
    print(f"samples streaming ({drawn} evals' samples), key to pane switch handled: "
          f"{ms(sampling[0])}")  # fmt: skip
    print(f"samples streaming, key to new pane on screen:  {ms(sampling[1])}")
    print(f"step end in the run to its event at the follower: {ms(TimedFollower.delays, 'steps')}")


if __name__ == "__main__":
    main()
