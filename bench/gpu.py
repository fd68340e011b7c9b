"""GPU benchmark: training tokens/s, MFU and peak memory per fast-path setting, and sampling.

    python bench/gpu.py                               # lal and small, batch 16
    python bench/gpu.py --configs lal --batch-size 32 --steps 40
    python bench/gpu.py --sections sample             # only the sampling table

Training rows, each on the same initial weights, timed one after another (a GPU is not shared
the way a CPU is, so interleaving buys nothing here):
  reference (naive)    bench/reference.py: explicit masked attention, fp32 without TF32, eager,
                       plain AdamW
  lal eager fp32/TF32  SDPA, plain loss (full logits), fused AdamW, TF32 matmuls
  lal eager bf16       + bf16 autocast
  compiled, chunked    + torch.compile, with the CPU's chunked loss (kept out of the graph)
  compiled (defaults)  + torch.compile, the plain loss inside the graph: lal's CUDA defaults
Compile time is shown apart.
MFU is against the GPU's dense bf16 tensor-core peak (lal_core.backends.torch.device) for every
row, so rows compare directly. Peak memory is torch.cuda.max_memory_allocated during the timed
steps.

Sampling rows: batch 1, top-k 50, tokens/s and time to first token, lal with the KV cache
(bf16 sampling weights, the default), lal recomputing the window, and the reference. Each is
timed on its first run at that length, after a short warm-up run, as a user's first `lal
sample` would see it (per-length kernel plans, if any, are not hidden by a rehearsal).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import run  # noqa: E402
from reference import NaiveGPT  # noqa: E402

from lal_core.backends.torch.backend import TorchBackend  # noqa: E402
from lal_core.backends.torch.device import default_peak_flops
from lal_core.generation.sampling import generate_ids  # noqa: E402
from lal_core.model.config import ModelConfig, get_model_config
from lal_core.model.cost import flops_per_token  # noqa: E402
from lal_core.model.recipe import TrainConfig  # noqa: E402

Step = run.Step
DEVICE = torch.device("cuda")


def tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def reference_row(cfg: ModelConfig, state: dict, batch: int) -> tuple[Step, float | None]:
    tf32(False)  # the reference is plain float32
    return run.reference_step(cfg, state, batch, device="cuda"), None


def lal_step(**options) -> Callable:
    def build(cfg: ModelConfig, state: dict, batch: int) -> tuple[Step, float | None]:
        backend = TorchBackend(cfg, seed=0, device="cuda", **options)  # turns TF32 on
        backend.load_state_dict(state)
        backend.setup_training(TrainConfig(batch_size=batch))  # compiles, when compiling

        def step(x, y):
            return backend.train_step(x, y, 3e-4)

        return step, backend.compile_seconds

    return build


SETTINGS: list[tuple[str, Callable]] = [
    ("reference (naive, fp32)", reference_row),
    ("lal eager fp32/TF32", lal_step(dtype="float32", compile=False)),
    ("lal eager bf16", lal_step(dtype="bfloat16", compile=False)),
    ("lal compiled bf16, chunked loss", lal_step(dtype="bfloat16", chunked_loss=True)),
    ("lal compiled bf16 (defaults)", lal_step()),
]


def bench_training(name: str, batch: int, steps: int, warmup: int) -> list[tuple]:
    """(label, tokens/s, peak GB, compile seconds, last loss) per setting."""
    cfg = get_model_config(name)
    state = TorchBackend(cfg, seed=0, device="cpu", compile=False).state_dict()
    rng = np.random.default_rng(0)
    batches = [
        (rng.integers(0, cfg.vocab_size, (batch, cfg.block_size)),) * 2
        for _ in range(warmup + steps)
    ]
    rows = []
    for label, build in SETTINGS:
        gc.collect()
        torch.cuda.empty_cache()
        try:
            step, compile_s = build(cfg, state, batch)
            for x, y in batches[:warmup]:
                step(x, y)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            for x, y in batches[warmup:]:
                loss = step(x, y)  # .item() inside: every step synchronises
            seconds = time.perf_counter() - t0
            peak = torch.cuda.max_memory_allocated() / 1e9
            rows.append((label, batch * cfg.block_size * steps / seconds, peak, compile_s, loss))
        except torch.OutOfMemoryError:
            rows.append((label, None, None, None, None))
        step = None  # frees this setting's model before the next is built
    return rows


def bench_sampling(name: str, n_tokens: int, modes: tuple[str, ...]) -> dict:
    """{mode: (tokens/s, first token ms)} for 'cache', 'recompute' and 'reference'."""
    cfg = get_model_config(name)
    lal = TorchBackend(cfg, seed=0, device="cuda", compile=False)
    ref = NaiveGPT(cfg).to(DEVICE).eval()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in lal.state_dict().items()})
    prompt = [198] * 8
    out = {}
    for mode in modes:
        for warm_up in (True, False):  # 4 tokens first: CUDA's kernels and sampling copy
            n = 4 if warm_up else n_tokens
            tf32(mode != "reference")
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            first = None
            if mode == "reference":
                gen = ref.generate(torch.tensor([prompt], device=DEVICE), n)
            else:
                use_cache = mode == "cache"
                gen = generate_ids(lal, prompt, n, 0.8, 50, seed=0, use_cache=use_cache)
            for _ in gen:
                if first is None:
                    torch.cuda.synchronize()
                    first = time.perf_counter() - t0
            torch.cuda.synchronize()
            total = time.perf_counter() - t0
        out[mode] = (n_tokens / total, first * 1000)
    return out


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a CUDA GPU; bench/run.py measures the CPU")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["lal", "small"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--sections", nargs="+", default=["train", "sample"])
    args = parser.parse_args()

    name = torch.cuda.get_device_name()
    peak = default_peak_flops(DEVICE, "bfloat16")
    print(f"{name}, torch {torch.__version__}, bf16 peak for MFU {peak / 1e12:.0f} TFLOP/s")

    if "train" in args.sections:
        B = args.batch_size
        print(f"\n## Training, batch {B}, {args.steps} timed steps after {args.warmup} warm-up")
        for cfg_name in args.configs:
            cfg = get_model_config(cfg_name)
            rows = bench_training(cfg_name, B, args.steps, args.warmup)
            ref = rows[0][1]
            print(f"\n{cfg_name:<6} {'tokens/s':>10} {'vs ref':>7} {'MFU':>5} {'peak GB':>8}")
            for label, tok_s, gb, compile_s, loss in rows:
                if tok_s is None:
                    print(f"{'':<6} {'out of memory':>33}   {label}")
                    continue
                util = tok_s * flops_per_token(cfg) / peak
                ratio = f"{tok_s / ref:>6.2f}x" if ref else f"{'-':>7}"
                extra = f" (compiled in {compile_s:.0f} s)" if compile_s else ""
                print(
                    f"{'':<6} {tok_s:>10,.0f} {ratio} {util:>5.1%} {gb:>8.2f}   {label}{extra}"
                    f"  loss {loss:.3f}"
                )

    if "sample" in args.sections:
        print("\n## Sampling, batch 1, top-k 50 (tokens/s | first token ms)")
        print(f"{'config':<6} {'new':>5} {'lal cache':>17} {'lal recompute':>17} {'reference':>17}")
        for cfg_name in args.configs:
            for n in (200, 1000):
                r = bench_sampling(cfg_name, n, ("cache", "recompute", "reference"))
                cells = [f"{r[m][0]:>8,.1f} | {r[m][1]:>5.1f}" for m in r]
                ratio = r["cache"][0] / r["reference"][0]
                print(
                    f"{cfg_name:<6} {n:>5} "
                    + " ".join(f"{c:>17}" for c in cells)
                    + f"   cache {ratio:.1f}x reference"
                )


if __name__ == "__main__":
    main()
