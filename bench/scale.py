"""Scale figures (issue 17): `lal prepare` against a plain tokenising loop, and data-parallel
training on the CPU against one process.

    uv run python bench/scale.py --sections prepare ddp [--mb 1000] [--steps 30]
    uv run python bench/scale.py --sections nccl [--config small] [--steps 60]   # on a GPU

prepare: a generated corpus of --mb megabytes (files of 10 MB of TinyShakespeare, each shifted
    so no two are the same) tokenised by `lal prepare` (a worker process a core) and by a
    single-threaded loop of tiktoken's encode_ordinary over whole files, each in a fresh
    process: MB/s and peak RSS (lal's main process, and the largest of its workers).
ddp: tiny at batch 16, `lal train --nproc 2` (2 ranks x 1 thread, gloo) against `lal train`
    (1 process x 2 threads): median tokens/s of the steps after the first 5. On a CPU the two
    ranks share the cores one process would use, so this measures DDP's overhead, not a
    speed-up.
nccl (a CUDA machine; not in the defaults): `lal train --device cuda` under a bare torchrun
    with one rank (NCCL at world size 1) against plain `lal train`, small by default, with the
    line the run printed that names its process group.

Needs TinyShakespeare (LAL_DATA or data/tinyshakespeare/input.txt) and the tokenizer.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lal_core.data.corpus import resolve_corpus  # noqa: E402

_LOOP = """
import resource, sys, time
from pathlib import Path
import numpy as np
import tiktoken
enc = tiktoken.get_encoding("r50k_base")
files = sorted(Path(sys.argv[1]).rglob("*.txt"))
out = open(sys.argv[2], "wb")
t0, total = time.perf_counter(), 0
for f in files:
    text = f.read_text()
    total += len(text.encode())
    out.write(np.asarray(enc.encode_ordinary(text), dtype=np.uint16).tobytes())
out.close()
seconds = time.perf_counter() - t0
print(total / seconds / 1e6, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)
"""

_PREPARE = """
import resource, sys, time
from lal_core.data.prepare import prepare
t0 = time.perf_counter()
dataset = prepare(sys.argv[1], name="bench", show_progress=False)
seconds = time.perf_counter() - t0
rss = [resource.getrusage(who).ru_maxrss / 1e6 for who in (resource.RUSAGE_SELF,
                                                            resource.RUSAGE_CHILDREN)]
print(float(sys.argv[2]) / seconds / 1e6, *rss, dataset.index["tokens"])
"""


def make_corpus(folder: Path, mb: int) -> int:
    """Files of 10 MB of TinyShakespeare (each starting at another offset); their bytes."""
    text = resolve_corpus().read_text()
    folder.mkdir(parents=True, exist_ok=True)
    size, written, i = 10 * 1_000_000, 0, 0
    while written < mb * 1_000_000:
        start = (i * 7919) % len(text)
        body = (text[start:] + text) * (size // len(text) + 1)
        path = folder / f"part-{i:04d}.txt"
        path.write_text(body[:size])
        written += path.stat().st_size
        i += 1
    return written


def bench_prepare(mb: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus"
        total = make_corpus(corpus, mb)
        env = {**os.environ, "LAL_HOME": str(tmp / "home")}
        loop = subprocess.run(
            [sys.executable, "-c", _LOOP, str(corpus), str(tmp / "loop.bin")],
            capture_output=True, text=True, check=True, env=env,
        )  # fmt: skip
        mine = subprocess.run(
            [sys.executable, "-c", _PREPARE, str(corpus), str(total)],
            capture_output=True, text=True, check=True, env=env, cwd=ROOT,
        )  # fmt: skip
        loop_mbs, loop_rss = map(float, loop.stdout.split())
        mbs, rss, worker_rss, tokens = mine.stdout.split()
        cores = os.cpu_count()
        print(f"\n## Tokenising {total / 1e6:,.0f} MB ({int(tokens):,} tokens), {cores} cores")
        print("| | MB/s | peak RSS (GB) |\n|---|---|---|")
        print(f"| single-threaded encode_ordinary loop | {loop_mbs:.1f} | {loop_rss:.2f} |")
        print(
            f"| lal prepare | {float(mbs):.1f} | {float(rss):.2f} (+ {float(worker_rss):.2f} "
            "each worker process) |"
        )
        print(f"lal prepare / loop: {float(mbs) / loop_mbs:.2f}x")


def _train(
    args: list[str], env: dict, runs: Path, launcher: tuple[str, ...] = ()
) -> tuple[float, str]:
    """(median tokens/s of the steps after the first 5, what `lal train` printed), run as
    `python [LAUNCHER] -m lal_core.cli train ARGS`."""
    corpus = str(resolve_corpus())
    run_id = f"r{time.monotonic_ns()}"
    cmd = [sys.executable, *launcher, "-m", "lal_core.cli", "train", *args, "--data", corpus]
    cmd += ["--runs-dir", str(runs), "--run-id", run_id]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=ROOT)
    rows = [json.loads(line) for line in (runs / run_id / "metrics.jsonl").open()]
    rates = [r["tok_s"] for r in rows if r["type"] == "step"][5:]
    return statistics.median(rates), done.stdout + done.stderr


def bench_ddp(steps: int) -> None:
    recipe = ["--config", "tiny", "--max-iters", str(steps), "--eval-interval", "100000"]
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        one, _ = _train(recipe, {**os.environ, "OMP_NUM_THREADS": "2"}, runs)
        two, _ = _train([*recipe, "--nproc", "2"], {**os.environ, "OMP_NUM_THREADS": "1"}, runs)
    print("\n## Data parallel on the CPU: tiny, batch 16 (tokens/s, median of the steps)")
    print("| | tokens/s |\n|---|---|")
    print(f"| 1 process x 2 threads | {one:,.0f} |")
    print(f"| 2 ranks x 1 thread (gloo) | {two:,.0f} |")
    print(f"2 ranks / 1 process: {two / one:.2f}x (the cores are the same: this is DDP's cost)")


def bench_nccl(steps: int, config: str, device: str = "cuda") -> None:
    """On one GPU: `lal train` under a bare torchrun, one rank (DistributedDataParallel over
    NCCL at world size 1; `--nproc 1` would not launch torchrun) against plain `lal train`.
    Multi-GPU scaling is argued, not measured, here."""
    recipe = ["--config", config, "--device", device, "--max-iters", str(steps)]
    recipe += ["--eval-interval", "100000"]
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        plain, _ = _train(recipe, dict(os.environ), runs)
        torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1")
        ddp, said = _train(recipe, dict(os.environ), runs, torchrun)
    header = next((line for line in said.splitlines() if " x micro-batch " in line), "(none)")
    print(f"\n## NCCL at world size 1: {config}, batch 16, one GPU (tokens/s, median of the steps)")
    print(f"the DDP run said: {header.strip()}")
    print("| | tokens/s |\n|---|---|")
    print(f"| lal train | {plain:,.0f} |")
    print(f"| lal train under torchrun, 1 rank | {ddp:,.0f} |")
    print(f"torchrun / plain: {ddp / plain:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=["prepare", "ddp"])
    parser.add_argument("--mb", type=int, default=1000, help="corpus size for prepare")
    parser.add_argument("--steps", type=int, default=30, help="training steps for ddp, nccl")
    parser.add_argument("--config", default="small", help="the config for nccl")
    args = parser.parse_args()
    if "prepare" in args.sections:
        bench_prepare(args.mb)
    if "ddp" in args.sections:
        bench_ddp(args.steps)
    if "nccl" in args.sections:
        bench_nccl(args.steps, args.config)


if __name__ == "__main__":
    main()
