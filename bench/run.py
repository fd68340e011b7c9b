"""Benchmarks: lal's engine against the reference, side by side, in one run.

The reference is the original write-up's code (docs/recipe.md states its recipe)
(`../shared/reference/original_model.py`, or `$LAL_REFERENCE_DIR/original_model.py`: fp32,
explicit attention, biases, plain AdamW, no KV cache), what users compare lal with; where it is
not there, bench/reference.py's naive GPT (lal's architecture written the plain way) stands in,
and the tables say "reference (naive)".

    uv run python bench/run.py            # the full table (about half an hour on 2 CPU cores)
    uv run python bench/run.py --quick    # a few minutes: fewer steps and tokens, no compile,
                                          # no lal-size memory check
    uv run python bench/run.py --sections train sample   # only some sections
    uv run python bench/run.py --backends torch mlx --configs tiny --sections train sample
                                          # MLX against PyTorch too (needs the mlx extra)

Sections, each a table:
  train   training tokens/s (batch 16) for tiny and small, per fast-path setting (eager fp32
          with the plain loss, + chunked loss, + fused AdamW, + bf16 autocast, + compile,
          the defaults) against the reference (its training step), with ratios and
          model-FLOPs utilisation.
          All settings start from the same weights; lal's steps interleave round-robin, so
          load drifts hit all alike; medians. The reference runs first, alone in a process of
          its own (`reference_alone`: page faults, which it takes many of, cost more here
          while other processes hold memory). A last row per config gives the limit: the
          tokens/s with every FLOP at the measured fp32 matmul peak (and bf16's, where it is
          native), and so the largest ratio to the reference any implementation could reach.
  sample  sampling at batch 1: tokens/s and time to first token, lal with the KV cache, the
          same with the bf16 head where the int8 head is the default (a CPU without native
          bf16), lal recomputing the context every token, and the reference, at 100/200/1000
          new tokens.
          Past block_size the window slides and every token is a full recompute (as in the
          reference), so 1000-token rows mix both regimes.
  batch   many samples: 25 samples of one prompt drawn as one batch (one sequence per row of
          the KV cache) against the same 25 drawn one by one, per config and backend; the
          same seeds, so the same tokens (a mismatch is reported).
  scale   long-prompt scaling: ms per token as the generated text grows; flat inside the
          window with the KV cache, then the full-recompute rate once the window slides.
  memory  peak resident memory (RSS) of training steps at batch 16, one fresh subprocess per
          config, lal's defaults and the reference.
  eval    an eval's cost as a fraction of the run's wall time at the default settings (its
          own batch, --eval-tokens, the eval interval kept in sequences), at batch 2 and 16,
          and the same for the samples drawn after it (--eval-samples x --eval-sample-tokens,
          with their writing figures), and what they cost once per run.

With --backends torch mlx the train table gains MLX rows (eager, and mx.compile) and their
ratio to lal's torch defaults, and the sample section a table of both backends' defaults on
the same weights with the ratio. MLX rows time --mlx-steps steps: on the Linux CPU wheel
(reference BLAS, one thread) a tiny step at batch 16 takes tens of seconds; on a Mac's GPU the
same command shows where MLX wins.

Absolute figures drift on shared machines; the ratios, measured side by side in one run, are
the figures to compare. Training settings that cannot run well here are skipped with a reason
(bf16 without native bf16 kernels: the matmul figures in the header show why).
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reference import NaiveGPT  # noqa: E402

from lal_core.backends import make_backend  # noqa: E402
from lal_core.backends.torch.backend import TorchBackend  # noqa: E402
from lal_core.backends.torch.device import measure_matmul_flops  # noqa: E402
from lal_core.backends.torch.precision import compile_available, cpu_has_fast_bf16  # noqa: E402
from lal_core.generation.controls import Controls  # noqa: E402
from lal_core.generation.sampling import Generation, generate_ids  # noqa: E402
from lal_core.model.config import ModelConfig, get_model_config
from lal_core.model.cost import flops_per_token
from lal_core.model.recipe import TrainConfig  # noqa: E402
from lal_core.runs.events import StopRequest  # noqa: E402
from lal_core.training.evals import evaluate  # noqa: E402
from lal_core.training.samples import EvalSamples  # noqa: E402

Step = Callable[[np.ndarray, np.ndarray], float]


# -- training ---------------------------------------------------------------------------------
@dataclass
class Setting:
    """A row of the training table: how to build a step function on given initial weights."""

    label: str
    build: Callable[[ModelConfig, dict, int], Step]
    skip: str = ""  # why this row is not measured here ('' = measured)
    compile_seconds: float | None = None
    max_steps: int | None = None  # fewer timed steps than the others (a slow backend)


def original_module():
    """The original write-up's model and step (`original_model.py` in $LAL_REFERENCE_DIR, else
    ../shared/reference beside the repo), the code users compare with; None where it is not
    there, and bench/reference.py's naive GPT stands in."""
    root = Path(__file__).resolve().parents[1]
    folder = Path(os.environ.get("LAL_REFERENCE_DIR") or root.parent / "shared" / "reference")
    path = folder / "original_model.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("original_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ORIGINAL = original_module()
REFERENCE = "original write-up" if ORIGINAL else "reference (naive)"


def reference_model(cfg: ModelConfig, state: dict, batch: int = 1) -> torch.nn.Module:
    """The reference row's model: the original write-up's GPT (its own init, biases and all:
    the timing does not depend on the values), else the naive GPT on lal's weights."""
    if ORIGINAL is not None:
        torch.manual_seed(0)
        return ORIGINAL.GPT(ORIGINAL.get_config(cfg.name, batch_size=batch))
    model = NaiveGPT(cfg)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return model


def reference_step(cfg: ModelConfig, state: dict, batch: int, device: str = "cpu") -> Step:
    """The reference row's training step: the original loop body (forward, zero_grad,
    backward, clip, AdamW step; fp32, eager), on the original model where it is there."""
    model = reference_model(cfg, state, batch).to(device)
    if ORIGINAL is not None:
        ocfg = ORIGINAL.get_config(cfg.name, batch_size=batch)
        opt = ORIGINAL.make_optimizer(model, ocfg)

        def original(x, y):
            x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            return ORIGINAL.train_step(model, opt, x, y, ocfg).item()

        return original
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)

    def step(x, y):
        _, loss = model(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    return step


def reference_alone(
    cfg: ModelConfig, state: dict, batch: int, steps: int, device: str = "cpu"
) -> list[float]:
    """Seconds of each timed step of the reference, run as users run the original code: in a
    process of its own, with nothing of lal's resident. So not interleaved with lal's rows but
    before they are built: on these VMs a page fault costs more while other processes hold
    memory, and the original faults in 411 MB of logits every step (tiny alone: 2,292 tok/s;
    with 6 GB held by another process: 1,199). In lal's process it also ran faster, as lal's
    training keeps freed memory for the next step (lal_core/backends/torch/cpu_memory.py)."""
    context = multiprocessing.get_context("spawn")  # a fresh process, no fork of torch threads
    with context.Pool(1) as pool:
        return pool.apply(_time_reference, (cfg, state, batch, steps, device))


def _time_reference(cfg: ModelConfig, state: dict, batch: int, steps: int, device: str):
    step = reference_step(cfg, state, batch, device)
    times = []
    for i, x, y in _batches(cfg, batch, steps):
        t0 = time.perf_counter()
        step(x, y)
        if i:
            times.append(time.perf_counter() - t0)
    return times


def _batches(cfg: ModelConfig, batch: int, steps: int):
    """(i, x, y) for the steps every row takes, the same for all: step 0 warms up and is not
    timed."""
    rng = np.random.default_rng(0)
    for i in range(steps + 1):
        x = rng.integers(0, cfg.vocab_size, (batch, cfg.block_size))
        y = rng.integers(0, cfg.vocab_size, (batch, cfg.block_size))
        yield i, x, y


def lal_step(setting: Setting | None = None, device: str = "cpu", **options) -> Callable:
    """A builder for lal's TorchBackend on `device` with the given fast-path options."""

    def build(cfg: ModelConfig, state: dict, batch: int) -> Step:
        backend = TorchBackend(cfg, seed=0, device=device, **options)
        backend.load_state_dict(state)
        backend.setup_training(TrainConfig(batch_size=batch))  # compiles, if compiling
        if setting is not None:
            setting.compile_seconds = backend.compile_seconds

        def step(x, y):
            return backend.train_step(x, y, 3e-4)

        return step

    return build


def torch_settings(args) -> list[Setting]:
    on = {"device": args.device}
    no_bf16 = (
        ""
        if args.device != "cpu" or cpu_has_fast_bf16() or args.force_bf16
        else "no native bf16 on this CPU (see the matmul figures above); --force-bf16 runs it"
    )
    no_compile = "--quick / --no-compile-rows" if args.quick or args.no_compile_rows else ""
    no_compile = no_compile or compile_available(torch.device(args.device))[1]
    base = {"dtype": "float32", "compile": False, **on}
    rows = [
        Setting(
            "lal eager fp32 (SDPA), plain loss", lal_step(fused=False, chunked_loss=False, **base)
        ),
        Setting("  + chunked linear+CE loss", lal_step(fused=False, **base)),
        Setting("  + fused AdamW", lal_step(fused=True, **base)),
        Setting(
            "  + bf16 autocast",
            lal_step(fused=True, dtype="bfloat16", compile=False, **on),
            skip=no_bf16,
        ),
    ]
    compiled = Setting("  + torch.compile (fp32)", None, skip=no_compile)
    compiled.build = lal_step(setting=compiled, fused=True, dtype="float32", compile=True, **on)
    rows.append(compiled)
    defaults = TorchBackend(get_model_config("tiny"), device=args.device)
    rows.append(Setting(f"lal defaults ({defaults.describe()})", lal_step(**on)))
    return rows


def mlx_step(compile: bool) -> Callable:
    """A builder for lal's MLXBackend (its default device: the GPU on a Mac, else the CPU)."""

    def build(cfg: ModelConfig, state: dict, batch: int) -> Step:
        from lal_core.backends.mlx.backend import MLXBackend

        backend = MLXBackend(cfg, seed=0, compile=compile)
        backend.load_state_dict(state)
        backend.setup_training(TrainConfig(batch_size=batch))

        def step(x, y):
            return backend.train_step(x, y, 3e-4)

        return step

    return build


def mlx_settings(args) -> list[Setting]:
    """MLX rows: eager, and compiled with mx.compile (the default on a GPU). On the Linux CPU
    wheel (reference BLAS, one thread) a tiny step at batch 16 takes tens of seconds, and the
    compiled step's first call C++-compiles its kernels (a minute or more, cached afterwards),
    so these rows time only --mlx-steps steps."""
    from lal_core.backends import mlx_available

    missing = "" if mlx_available() else "mlx is not installed (uv sync --extra mlx)"
    no_compile = "--quick / --no-compile-rows" if args.quick or args.no_compile_rows else ""
    n = args.mlx_steps
    return [
        Setting("mlx eager fp32", mlx_step(False), skip=missing, max_steps=n),
        Setting("mlx mx.compile step", mlx_step(True), skip=missing or no_compile, max_steps=n),
    ]


# Other backends add their rows here; --backends picks them.
BACKEND_SETTINGS: dict[str, Callable[[argparse.Namespace], list[Setting]]] = {
    "torch": torch_settings,
    "mlx": mlx_settings,
}


def bench_training(
    name: str,
    settings: list[Setting],
    steps: int,
    batch: int,
    device: str = "cpu",
    with_reference: bool = True,
) -> list[tuple]:
    """(label, tokens/s or None, skip reason, compile seconds) per row, the reference first
    (on `device`, as lal's torch rows) unless `with_reference` is off."""
    cfg = get_model_config(name)
    state = TorchBackend(cfg, seed=0, compile=False).state_dict()
    rows, times = list(settings), {}
    if with_reference:  # timed before lal's rows are built: see reference_alone
        rows.insert(0, Setting(REFERENCE, build=None))
        times[REFERENCE] = reference_alone(cfg, state, batch, steps, device)
    steppers = {s.label: s.build(cfg, state, batch) for s in settings if not s.skip}
    limit = {s.label: min(steps, s.max_steps or steps) for s in settings}
    times.update({label: [] for label in steppers})
    for i, x, y in _batches(cfg, batch, steps):
        for label, step in steppers.items():
            if i > limit[label]:
                continue
            t0 = time.perf_counter()
            step(x, y)
            if i:
                times[label].append(time.perf_counter() - t0)
    tokens = batch * cfg.block_size
    out = []
    for s in rows:
        tok_s = tokens / statistics.median(times[s.label]) if s.label in times else None
        out.append((s.label, tok_s, s.skip, s.compile_seconds))
    return out


# -- sampling ---------------------------------------------------------------------------------
def bench_sampling(name: str, n_tokens: int, modes: tuple[str, ...]) -> dict:
    """{mode: (tokens/s, first token ms)} for 'cache', 'bf16 head' (the cache with the int8
    head off, where the defaults have it on), 'recompute' and 'reference'."""
    cfg = get_model_config(name)
    lal = make_backend("torch", cfg, seed=0, device="cpu")
    state = lal.state_dict()
    # The bf16-head row only where the defaults use the int8 head.
    modes = tuple(m for m in modes if m != "bf16 head" or lal.int8_head)
    lal.ready_for_sampling()  # as `load_for_sampling` does: the inference copy at load
    if "bf16 head" in modes:
        bf16_head = make_backend("torch", cfg, device="cpu", int8_head=False)
        bf16_head.load_state_dict(state)
        bf16_head.ready_for_sampling()
    ref = reference_model(cfg, state).eval()
    prompt = [198] * 8
    out = {}
    for mode in modes:
        t0 = time.perf_counter()
        first = None
        if mode == "reference":
            gen = ref.generate(torch.tensor([prompt]), n_tokens)
        elif mode == "bf16 head":
            gen = generate_ids(bf16_head, prompt, n_tokens, 0.8, 50, seed=0)
        else:
            use_cache = mode == "cache"
            gen = generate_ids(lal, prompt, n_tokens, 0.8, 50, seed=0, use_cache=use_cache)
        for _ in gen:
            first = first or time.perf_counter() - t0
        total = time.perf_counter() - t0
        out[mode] = (n_tokens / total, first * 1000)
    return out


def bench_backend_sampling(name: str, n_tokens: int, backends: list[str]) -> dict:
    """{backend: (tokens/s, first token ms)}: each backend's defaults, the same weights, the
    KV cache, top-k 50."""
    cfg = get_model_config(name)
    state = make_backend("torch", cfg, seed=0, device="cpu").state_dict()
    prompt = [198] * 8
    out = {}
    for b in backends:
        backend = make_backend(b, cfg, seed=0)
        backend.load_state_dict(state)
        backend.ready_for_sampling()
        t0 = time.perf_counter()
        first = None
        for _ in generate_ids(backend, prompt, n_tokens, 0.8, 50, seed=0):
            first = first or time.perf_counter() - t0
        out[b] = (n_tokens / (time.perf_counter() - t0), first * 1000)
    return out


def bench_many_samples(name: str, backend: str, samples: int, n_tokens: int) -> tuple:
    """(batched tokens/s, one-by-one tokens/s): `samples` samples of `n_tokens` from one prompt,
    drawn as one batch and then one at a time with the same seeds (the same tokens: checked)."""
    cfg = get_model_config(name)
    state = make_backend("torch", cfg, seed=0, device="cpu").state_dict()
    model = make_backend(backend, cfg, seed=0)
    model.load_state_dict(state)
    prompt = [198] * 8
    Generation(model, prompt, 4, Controls(), 1, seed=0).run()  # warm-up, not timed
    t0 = time.perf_counter()
    together = Generation(model, prompt, n_tokens, Controls(), samples, seed=0).run()
    batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    alone = [
        Generation(model, prompt, n_tokens, Controls(), 1, seed=i).run()[0] for i in range(samples)
    ]
    one_by_one = time.perf_counter() - t0
    same = sum(a.tokens == b.tokens for a, b in zip(together, alone, strict=True))
    total = samples * n_tokens
    return total / batched, total / one_by_one, same


def bench_scaling(name: str, past: int) -> list[tuple[str, float]]:
    """(position range, mean ms per token) from a 1-token prompt to `past` tokens beyond the
    window, with the KV cache."""
    cfg = get_model_config(name)
    lal = make_backend("torch", cfg, seed=0, device="cpu")
    n = cfg.block_size - 1 + past
    stamps = []
    t0 = time.perf_counter()
    for _ in generate_ids(lal, [198], n, 0.8, 50, seed=0):
        stamps.append(time.perf_counter())
    per_token = np.diff([t0] + stamps) * 1000  # per_token[i]: the token at context length i+2
    quarter = cfg.block_size // 4
    rows = []
    for q in range(4):
        lo, hi = q * quarter, min((q + 1) * quarter, cfg.block_size - 1)
        rows.append((f"{lo + 1}-{hi} (cache)", float(np.mean(per_token[max(lo, 1) : hi]))))
    slide = per_token[cfg.block_size - 1 :]
    rows.append((f"past {cfg.block_size} (slides)", float(np.mean(slide))))
    return rows


# -- memory -----------------------------------------------------------------------------------
def memory_child(name: str, who: str, batch: int, steps: int) -> None:
    """Run in a fresh process: train `steps` steps, print the peak RSS in bytes."""
    cfg = get_model_config(name)
    rng = np.random.default_rng(0)
    if who == "reference":
        step = reference_step(cfg, TorchBackend(cfg, seed=0).state_dict(), batch)
    else:
        backend = make_backend("torch", cfg, seed=0, device="cpu")
        backend.setup_training(TrainConfig(batch_size=batch))

        def step(x, y):
            return backend.train_step(x, y, 3e-4)

    for _ in range(steps):
        x = rng.integers(0, cfg.vocab_size, (batch, cfg.block_size))
        step(x, x)
    print(peak_rss_bytes())


def peak_rss_bytes() -> int:
    """This process's peak resident memory. VmHWM from /proc (Linux) starts afresh at exec;
    getrusage's ru_maxrss does not (a child started by a big parent reports the parent's)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # macOS: bytes, Linux: KiB


def bench_memory(name: str, who: str, batch: int, steps: int = 2) -> float | None:
    """Peak RSS in GB of training steps in a fresh subprocess (None if it failed)."""
    cmd = [sys.executable, __file__, "--memory-child", name, who, str(batch), str(steps)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    try:
        return int(done.stdout.strip().splitlines()[-1]) / 1e9
    except (ValueError, IndexError):
        print(f"  memory {name}/{who} failed: {done.stderr.strip()[-300:]}", file=sys.stderr)
        return None


# -- eval cost --------------------------------------------------------------------------------
class _SyntheticCorpus:
    """TinyShakespeare's split sizes (304,222 train / 33,803 val tokens; docs/recipe.md, Data)
    of random tokens."""

    cache = None  # no token cache: its verbatim index is built, not loaded

    def __init__(self, vocab: int) -> None:
        rng = np.random.default_rng(0)
        self.train = rng.integers(0, vocab, 304_222).astype(np.int64)
        self.val = rng.integers(0, vocab, 33_803).astype(np.int64)


@dataclass(frozen=True)
class EvalCost:
    eval_seconds: float  # one eval: train and val windows
    sample_seconds: float  # the samples drawn after it, with their figures (median of rounds)
    setup_seconds: float  # once per run: prompts, the held-out figures, the verbatim index
    every: int  # steps between evals
    step_seconds: float

    def share(self, seconds: float) -> float:
        """`seconds` per eval as a fraction of the run's wall time."""
        total = self.eval_seconds + self.sample_seconds + self.every * self.step_seconds
        return seconds / total


def bench_eval(name: str, batch: int, step_seconds: float, rounds: int = 3) -> EvalCost:
    """What evals cost at the default settings: one eval (train and val windows, at the eval's
    own batch) per `evals_every` steps, then its samples (`training.samples`, the recipe's
    count and length, drawn as in a run: right after the eval, from a fresh sampling copy of
    the weights, on one thread while training holds the cores)."""
    cfg, train_cfg = get_model_config(name), TrainConfig(batch_size=batch)
    backend = make_backend("torch", cfg, seed=0, device="cpu")
    corpus = _SyntheticCorpus(cfg.vocab_size)
    t0 = time.perf_counter()
    samples = EvalSamples.for_pretraining(backend, corpus, train_cfg, StopRequest())
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluate(backend, corpus, train_cfg)
    seconds = time.perf_counter() - t0
    drawn = []
    for _ in range(rounds):
        evaluate(backend, corpus, replace(train_cfg, eval_tokens=2048))  # as after an eval
        backend.sampler.weights_changed()  # a training step came before: no sampling copy
        t0 = time.perf_counter()
        samples.draw(0, lambda event: None)
        drawn.append(time.perf_counter() - t0)
    return EvalCost(seconds, float(np.median(drawn)), setup, train_cfg.evals_every, step_seconds)


# -- the report -------------------------------------------------------------------------------
def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        name, who, batch, steps = sys.argv[2:6]
        memory_child(name, who, int(batch), int(steps))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "small"])
    parser.add_argument("--backends", nargs="+", default=["torch"], choices=list(BACKEND_SETTINGS))
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["train", "sample", "batch", "scale", "memory", "eval"],
        choices=["train", "sample", "batch", "scale", "memory", "eval"],
    )
    parser.add_argument("--quick", action="store_true", help="a short run (a few minutes)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per setting")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--no-compile-rows", action="store_true", help="skip the compile rows")
    parser.add_argument("--force-bf16", action="store_true", help="time bf16 even if emulated")
    parser.add_argument(
        "--device",
        default="cpu",
        help="the torch rows of the train section (and its reference) on this device: mps on a "
        "Mac gives the write-up's PyTorch MPS against MLX table with --backends torch mlx (the "
        "other sections stay on the CPU)",
    )
    parser.add_argument(
        "--mlx-steps", type=int, default=None, help="timed MLX steps (default 2; --quick 1)"
    )
    parser.add_argument(
        "--mlx-tokens", type=int, default=None, help="sampled tokens per backend (default 100)"
    )
    args = parser.parse_args()
    steps = args.steps or (2 if args.quick else 5)
    args.mlx_steps = args.mlx_steps or (1 if args.quick else 2)
    args.mlx_tokens = args.mlx_tokens or (30 if args.quick else 100)
    B = args.batch_size

    fp32 = measure_matmul_flops("cpu", "float32")
    # Emulated bf16 is slow: a small product then, a full-size one where it is native.
    bf16 = measure_matmul_flops("cpu", "bfloat16", 1024 if cpu_has_fast_bf16() else 256)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {cpu_has_fast_bf16()}; "
        f"matmul {fp32 / 1e9:.0f} GFLOP/s fp32, {bf16 / 1e9:.1f} GFLOP/s bf16 (MFU is against "
        f"the peak of the row's type: the best fp32 rate seen in the run, or bf16's)"
    )
    default_rate = {}  # config -> tokens/s of lal's defaults, for the eval section

    if "train" in args.sections:
        print(f"\n## Training, batch {B}, median of {steps} interleaved steps")
        settings = [s for b in args.backends for s in BACKEND_SETTINGS[b](args)]
        for name in args.configs:
            cfg = get_model_config(name)
            rows = bench_training(name, settings, steps, B, args.device)
            # The MFU peak: the best matmul rate seen so far. Under load a single reading is
            # low (and MFU high), so measure again after each config's steps.
            fp32 = max(fp32, measure_matmul_flops.__wrapped__("cpu", "float32"))
            if cpu_has_fast_bf16():
                bf16 = max(bf16, measure_matmul_flops.__wrapped__("cpu", "bfloat16"))
            ref = rows[0][1]
            print(f"\n{name:<6} {'tokens/s':>9} {'vs ref':>7} {'MFU':>5}   (setting)")
            for label, tok_s, skip, compile_s in rows:
                if tok_s is None:
                    print(f"{'':<6} {'-':>9} {'':>7} {'':>5}   {label}: skipped, {skip}")
                    continue
                # Against the peak of the type the row trains in: bf16 rows at bf16's.
                sixteen = ("bf16" in label or "bfloat16" in label) and cpu_has_fast_bf16()
                util = tok_s * flops_per_token(cfg) / (bf16 if sixteen else fp32)
                util = f"{util:>5.0%}" if args.device == "cpu" else ""  # the CPU's peak
                extra = f" (compiled in {compile_s:.0f} s)" if compile_s else ""
                print(f"{'':<6} {tok_s:>9,.0f} {tok_s / ref:>6.2f}x {util:>5}   {label}{extra}")
                if label.startswith("lal defaults"):
                    default_rate[name] = tok_s
            # The most any implementation of this model's FLOPs can reach here: every FLOP at
            # the peak matmul rate. A ratio to the reference above this row's is out of reach.
            limits = [("fp32", fp32)] + ([("bf16", bf16)] if cpu_has_fast_bf16() else [])
            limits = limits if args.device == "cpu" else []  # the peaks measured are the CPU's
            for kind, peak in limits:
                limit = peak / flops_per_token(cfg)
                print(
                    f"{'':<6} {limit:>9,.0f} {limit / ref:>6.2f}x {'100%':>5}   "
                    f"limit: every FLOP at the {kind} matmul peak ({peak / 1e9:.0f} GFLOP/s)"
                )
            rates = {label: tok_s for label, tok_s, _, _ in rows if tok_s}
            for label in ("mlx eager fp32", "mlx mx.compile step"):
                if label in rates and name in default_rate:
                    print(
                        f"{'':<6} {label} / lal defaults (torch): "
                        f"{rates[label] / default_rate[name]:.3f}x"
                    )

    if "sample" in args.sections:
        print("\n## Sampling, batch 1, top-k 50 (tokens/s | first token ms)")
        plan = [("tiny", 100), ("tiny", 200), ("small", 200), ("tiny", 1000), ("small", 1000)]
        if args.quick:
            plan = [("tiny", 100), ("small", 200)]
        columns = ("cache", "bf16 head", "recompute", "reference")
        print(
            f"{'config':<6} {'new':>5} {'lal cache':>17} {'cache, bf16 head':>17} "
            f"{'lal recompute':>17} {'reference':>17}"
        )
        for name, n in plan:
            if name not in args.configs:
                continue
            # Past the window every mode recomputes the window per token: at 1000 tokens on
            # small that is minutes per mode, so only lal's cached run is timed there.
            modes = (
                ("cache",)
                if n > 2 * get_model_config(name).block_size and name != "tiny"
                else columns
            )
            r = bench_sampling(name, n, modes)
            cells = []
            for mode in columns:
                rate = r.get(mode)
                cells.append(f"{rate[0]:>8,.1f} | {rate[1]:>5.0f}" if rate else f"{'-':>16}")
            ratio = r["cache"][0] / r["reference"][0] if "reference" in r else None
            tail = f"   cache {ratio:.1f}x reference" if ratio else ""
            print(f"{name:<6} {n:>5} " + " ".join(f"{c:>17}" for c in cells) + tail)

        if len(args.backends) > 1:
            n = args.mlx_tokens
            print(f"\n## Sampling by backend, batch 1, top-k 50, {n} new tokens, KV cache")
            print(
                f"{'config':<6} " + " ".join(f"{b + ' tok/s | ttft ms':>24}" for b in args.backends)
            )
            for name in args.configs:
                r = bench_backend_sampling(name, n, args.backends)
                cells = " ".join(f"{r[b][0]:>15,.1f} | {r[b][1]:>6.0f}" for b in args.backends)
                base = r[args.backends[0]][0]
                ratios = ", ".join(
                    f"{b} {r[b][0] / base:.3f}x {args.backends[0]}" for b in args.backends[1:]
                )
                print(f"{name:<6} {cells}   {ratios}")

    if "batch" in args.sections:
        samples, n = (25, 100) if not args.quick else (25, 30)
        print(
            f"\n## Many samples: {samples} samples x {n} tokens of one prompt, top-k 50 (tokens/s)"
        )
        print(f"{'config':<6} {'backend':<7} {'one batch':>10} {'one by one':>11} {'ratio':>6}")
        for name in args.configs:
            for b in args.backends:
                together, alone, same = bench_many_samples(name, b, samples, n)
                # In float32 every row is its sample drawn alone (tests/test_sampling.py); a
                # 16-bit decode rounds a batch differently from one row, and on untrained
                # weights (near-uniform draws) that moves most draws.
                check = "" if same == samples else f"   ({samples - same} differ from alone)"
                rates = f"{together:>10,.0f} {alone:>11,.0f} {together / alone:>5.1f}x"
                print(f"{name:<6} {b:<7} {rates}{check}")

    if "scale" in args.sections:
        past = 8 if args.quick else 32
        print("\n## Long-prompt scaling, KV cache (ms per token by context length)")
        for name in args.configs:
            rows = bench_scaling(name, past)
            print(f"{name:<6} " + " | ".join(f"{label}: {ms:.1f}" for label, ms in rows))

    if "memory" in args.sections:
        print(f"\n## Peak RSS of training at batch {B}, fresh process per row (GB)")
        plan = [(n, w) for n in args.configs for w in ("lal", "reference")]
        if not args.quick:
            plan.append(("lal", "lal"))
        for name, who in plan:
            gb = bench_memory(name, who, B)
            print(f"{name:<6} {who:<10} {gb:.2f}" if gb else f"{name:<6} {who:<10} failed")

    if "eval" in args.sections:
        print(
            "\n## Eval cost, default settings (eval interval, eval batch, eval tokens; samples "
            f"{TrainConfig().eval_samples} x {TrainConfig().eval_sample_tokens} tokens)"
        )
        for name in args.configs:
            cfg = get_model_config(name)
            for batch in sorted({2, B}):
                rate = default_rate.get(name) if batch == B else None
                if rate is None:  # not timed by the train section: time a few default steps
                    default = [Setting("d", lal_step())]
                    rate = bench_training(name, default, 2, batch, with_reference=False)[0][1]
                cost = bench_eval(name, batch, batch * cfg.block_size / rate)
                print(
                    f"{name:<6} batch {batch:<3} every {cost.every} steps: eval "
                    f"{cost.eval_seconds:.1f} s ({cost.share(cost.eval_seconds):.1%} of the "
                    f"run's wall time), samples {cost.sample_seconds:.2f} s "
                    f"({cost.share(cost.sample_seconds):.2%}); once per run "
                    f"{cost.setup_seconds:.1f} s"
                )


if __name__ == "__main__":
    main()
