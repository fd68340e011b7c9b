"""How long lal's commands take to start, as whole processes from a shell.

    uv run python bench/startup.py                  # 5 rounds, a tiny run trained first
    uv run python bench/startup.py --rounds 9 --importtime

Each command runs as `python -m lal_core.cli ...` in a fresh process (what `uv run lal` runs,
without uv's own check), in rounds, the commands in turn; the figures are medians, of the time
to the command's first output and to its exit:

  lal --help                    the parser alone
  lal runs                      a runs folder with one run
  lal watch RUN                 a finished run's log, printed whole
  lal sample --tokens 1         load the best checkpoint, draw one token (its first output is
                                the prompt and that token, flushed together)
  lal train --max-iters 1       up to its first step: the `step` line's time in metrics.jsonl,
                                from the moment the process was started

With --importtime it also prints, per command, the modules whose import took longest
(`python -X importtime`, cumulative) and whether a framework (torch, mlx) was imported.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAL = [sys.executable, "-m", "lal_core.cli"]
TRAIN = ["--config", "tiny", "--eval-interval", "50", "--eval-samples", "0"]


def timed(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Seconds to the command's first output, and to its exit."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(LAL + args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    proc.stdout.read(1)
    first = time.perf_counter() - t0
    proc.stdout.read()
    assert proc.wait() == 0, args
    return first, time.perf_counter() - t0


def first_step(runs: Path, env: dict[str, str]) -> float:
    """Seconds from starting `lal train --max-iters 1` to its first step's end."""
    for old in runs.glob("first-*"):
        shutil.rmtree(old)
    run_id = f"first-{time.time_ns()}"
    t0 = time.time()
    args = ["train", *TRAIN, "--max-iters", "1", "--runs-dir", str(runs), "--run-id", run_id]
    subprocess.run(LAL + args, check=True, capture_output=True, env=env)
    for line in (runs / run_id / "metrics.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["type"] == "step":
            return event["t"] - t0
    raise RuntimeError("no step logged")


def import_profile(args: list[str], env: dict[str, str], top: int = 8) -> str:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lal_core.cli", *args],
        capture_output=True,
        text=True,
        env=env,
    )
    rows = []
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m and len(m.group(3)) <= 3:  # top-level imports and their direct children
            rows.append((int(m.group(2)), m.group(4)))
    names = {name for _, name in rows}
    frameworks = [f for f in ("torch", "mlx", "textual", "wandb") if f in names]
    best = sorted(rows, reverse=True)[:top]
    listed = ", ".join(f"{name} {us / 1000:.0f} ms" for us, name in best)
    return f"    frameworks: {', '.join(frameworks) or 'none'}; slowest imports: {listed}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--importtime", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        env = {**os.environ, "LAL_RUNS": str(runs)}
        setup = ["train", *TRAIN, "--max-iters", "10", "--runs-dir", str(runs), "--run-id", "r"]
        subprocess.run(LAL + setup, check=True, capture_output=True, env=env)
        commands = {
            "lal --help": ["--help"],
            "lal runs": ["runs", "--runs-dir", str(runs)],
            "lal watch RUN": ["watch", "r", "--runs-dir", str(runs)],
            "lal sample --tokens 1": ["sample", "r", "--runs-dir", str(runs), "--tokens", "1"],
        }
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        steps: list[float] = []
        for _ in range(args.rounds):
            for name, command in commands.items():
                times[name].append(timed(command, env))
            steps.append(first_step(runs, env))
        print(f"median of {args.rounds} rounds, seconds from the process's start")
        print(f"{'command':<24} {'1st output':>10} {'exit':>6}")
        for name, values in times.items():
            first = statistics.median(f for f, _ in values)
            print(f"{name:<24} {first:10.2f} {statistics.median(e for _, e in values):6.2f}")
            if args.importtime:
                print(import_profile(commands[name], env))
        print(f"{'lal train (1st step)':<24} {statistics.median(steps):10.2f}")


if __name__ == "__main__":
    main()
