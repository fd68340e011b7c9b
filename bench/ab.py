"""Interleaved A/B: this checkout's training and sampling rates against another checkout's, on
this machine, measured alternately so that drift hits both alike.

    uv run python bench/ab.py OTHER [--configs tiny small] [--rounds 3] [--steps 20]

OTHER is another checkout of lal (e.g. `git worktree add /tmp/lal-main main`); both run with
this checkout's virtual environment, each in fresh processes whose `PYTHONPATH` is its own
checkout. Per round and config, in A-B order then B-A order:
- train: `lal train --config C` for `--steps` steps at the recipe's batch (evals cheap and out
  of the way); the median tokens/s of its steps after the third, from its metrics.jsonl;
- sample: one checkpoint (trained once, by A) loaded by each checkout, one warm-up generation,
  then five of `--tokens` tokens; the median tokens/s.
It prints each measurement, then per config the median of each side and B/A.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"  # this workplace's offline copies, where there are
if "TIKTOKEN_CACHE_DIR" not in os.environ and (SHARED / "tiktoken-cache").is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED / "tiktoken-cache")

# Runs in the checkout under test: the sampling API's paths before and after the regrouping.
SAMPLE = """
import statistics, sys, time
try:
    from lal_core.generation.sampling import Generation, load_for_sampling
except ImportError:  # the flat layout before lal_core's packages
    from lal_core.sampling import Generation, load_for_sampling
threads = {"decode_threads": int(sys.argv[3])} if int(sys.argv[3]) else {}
model = load_for_sampling(sys.argv[1], "torch", "cpu", **threads)
tokens = int(sys.argv[2])
Generation(model, "ROMEO:", 20, seed=0).run()
rates = []
for seed in (1, 2, 3, 4, 5):
    t0 = time.perf_counter()
    Generation(model, "ROMEO:", tokens, seed=seed).run()
    rates.append(tokens / (time.perf_counter() - t0))
print(statistics.median(rates))
"""


def run(checkout: Path, args: list[str], scratch: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(checkout), "LAL_HOME": str(scratch)}
    done = subprocess.run(
        [sys.executable, *args], cwd=scratch, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: {' '.join(args[:4])} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def train_rate(checkout: Path, config: str, steps: int, corpus: Path, scratch: Path) -> float:
    """Median tokens/s of a short `lal train`'s steps after the third; its run folder."""
    runs = Path(tempfile.mkdtemp(dir=scratch, prefix="runs-"))
    flags = ["--config", config, "--max-iters", str(steps), "--eval-interval", str(steps)]
    flags += ["--eval-tokens", "2048", "--data", str(corpus), "--runs-dir", str(runs)]
    run(checkout, ["-m", "lal_core.cli", "train", *flags, "--run-id", "ab"], scratch)
    lines = (runs / "ab" / "metrics.jsonl").read_text().splitlines()
    steps_seen = [json.loads(x) for x in lines if '"type": "step"' in x]
    return statistics.median(s["tok_s"] for s in steps_seen if s["iter"] >= 3)


def sample_rate(
    checkout: Path, checkpoint: Path, tokens: int, threads: int, scratch: Path
) -> float:
    said = run(checkout, ["-c", SAMPLE, str(checkpoint), str(tokens), str(threads)], scratch)
    return float(said.split()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other", type=Path, help="the other checkout (B); A is this one")
    parser.add_argument("--configs", nargs="+", default=["tiny", "small"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=200, help="per timed generation")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="sampling's threads, fixed (default 0: what lal picks for the load it sees, which "
        "varies from one generation to the next)",
    )
    parser.add_argument("--data", type=Path, default=SHARED / "tinyshakespeare" / "input.txt")
    args = parser.parse_args()
    sides = {"A": REPO, "B": args.other.resolve()}
    table: dict[tuple[str, str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="lal-ab-") as tmp:
        scratch = Path(tmp)
        for config in args.configs:
            # One checkpoint for both sides' sampling: A's, from a short run of its own.
            runs = Path(tempfile.mkdtemp(dir=scratch, prefix="ckpt-"))
            flags = ["--config", config, "--max-iters", "2", "--eval-tokens", "2048"]
            flags += ["--data", str(args.data), "--runs-dir", str(runs), "--run-id", "ckpt"]
            run(REPO, ["-m", "lal_core.cli", "train", *flags], scratch)
            checkpoint = runs / "ckpt" / "best.safetensors"
            for r in range(args.rounds):
                for side in "AB" if r % 2 == 0 else "BA":
                    where = sides[side]
                    t = train_rate(where, config, args.steps, args.data, scratch)
                    s = sample_rate(where, checkpoint, args.tokens, args.threads, scratch)
                    table.setdefault((config, "train", side), []).append(t)
                    table.setdefault((config, "sample", side), []).append(s)
                    print(
                        f"round {r + 1} {config} {side}: train {t:,.0f} tok/s, "
                        f"sample {s:,.1f} tok/s",
                        flush=True,
                    )
    print("\nconfig  measure  A (this)   B (other)  B/A")
    for config in args.configs:
        for what in ("train", "sample"):
            a = statistics.median(table[(config, what, "A")])
            b = statistics.median(table[(config, what, "B")])
            print(f"{config:<7} {what:<8} {a:>9,.1f} {b:>10,.1f}  {b / a:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
