"""What live trackers cost a run: `lal train` with and without `--report-to`, side by side.

    uv run python bench/trackers.py                 # tiny, 60 steps a run, 2 rounds
    uv run python bench/trackers.py --steps 100 --rounds 3

Each round trains the same run (same seed, same data) three times, one after the other: with
no tracker, with `--report-to tensorboard`, with `--report-to tensorboard wandb` (W&B offline,
as on a machine without an account). A run's steps are timed by the run itself
(metrics.jsonl's tokens/s per step); the figure is the median over its steps after the first
five (warm-up), and the ratio of each tracked run to the untracked run of the same round. The
wall time of the command (start to exit, the trackers' last sending included) is printed too.
Needs the extras: uv sync --extra tensorboard --extra wandb.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KINDS = {"none": [], "tensorboard": ["tensorboard"], "both": ["tensorboard", "wandb"]}


def run_once(runs: Path, trackers: list[str], args: argparse.Namespace) -> tuple[float, float]:
    """Median step tokens/s after warm-up, and the command's wall seconds."""
    command = [sys.executable, "-m", "lal_core.cli", "train", "--config", args.config]
    command += ["--max-iters", str(args.steps), "--eval-interval", str(args.steps)]
    command += ["--runs-dir", str(runs), "--eval-samples", "1"]
    if trackers:
        command += ["--report-to", *trackers]
    env = {**os.environ, "HOME": str(runs.parent)}  # no W&B account: offline
    env.pop("WANDB_MODE", None)
    t0 = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    wall = time.perf_counter() - t0
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rates = [s["tok_s"] for s in steps if s["type"] == "step" and s["iter"] >= 5]
    shutil.rmtree(run)
    return statistics.median(rates), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        runs.mkdir()
        for r in range(args.rounds):
            for kind, trackers in KINDS.items():
                results[kind].append(run_once(runs, trackers, args))
                rate, wall = results[kind][-1]
                print(f"round {r + 1} {kind:<12} {rate:8,.0f} tok/s  {wall:6.1f} s", flush=True)
    print(f"\n{args.config}, {args.steps} steps a run, {args.rounds} rounds; median step tok/s")
    print(f"{'trackers':<12} {'tok/s':>8} {'vs none':>8} {'wall s':>7}")
    for kind, rows in results.items():
        ratios = [rate / base[0] for (rate, _), base in zip(rows, results["none"], strict=True)]
        rate = statistics.median(r for r, _ in rows)
        wall = statistics.median(w for _, w in rows)
        print(f"{kind:<12} {rate:8,.0f} {statistics.median(ratios):8.3f} {wall:7.1f}")


if __name__ == "__main__":
    main()
