"""Where a checkpoint's val loss comes from, and how over-confident it is.

    uv run python bench/calibration.py CHECKPOINT [CHECKPOINT ...] [--data FILE]

CHECKPOINT is a .safetensors file (a run's best.safetensors). For each, over the val split's
eval windows (the ones training's evals score):
- the val loss split by how often each target token occurs in the train split: never, 1-4
  times, 5-49, 50 or more; each part's share of the tokens, its mean loss, and its share of
  the val loss (the shares add up to it);
- the loss a never-seen token would have if the model spread exactly the val split's rate of
  them evenly over every token the train split lacks (what no model of this text can beat by
  much, as it has never seen which of them come);
- the val loss after two changes made after training: the logits divided by a temperature,
  and the softmax mixed with a uniform distribution. Either lowering the loss says the
  model is over-confident on text it has not seen. That is what label smoothing trains
  against (`--label-smoothing`, README.md, Training): it was chosen from these figures.

Figures are printed, nothing is written. About 2 minutes per small checkpoint on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from lal_core.backends import make_backend
from lal_core.data.corpus import load_corpus, val_windows
from lal_core.runs.checkpoints import load_weights

TEMPERATURES = (1.0, 1.05, 1.1, 1.15, 1.2)
MIXES = (0.001, 0.003, 0.01, 0.03)
BANDS = (("never", 0, 1), ("1-4", 1, 5), ("5-49", 5, 50), ("50+", 50, None))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """(N, V) float64 log-probabilities."""
    top = logits.max(-1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))


def measure(path: str, data: str | None, rows: int = 4) -> None:
    tensors, cfg = load_weights(path)
    backend = make_backend("torch", cfg, device="cpu")
    backend.load_state_dict(tensors)
    corpus = load_corpus(data)
    train, val = np.asarray(corpus.train), np.asarray(corpus.val)
    counts = np.bincount(train, minlength=cfg.vocab_size)  # (V,): each token's train count
    block = cfg.block_size
    starts = val_windows(val, block, 0)
    temp_sums, mix_sums = np.zeros(len(TEMPERATURES)), np.zeros(len(MIXES))
    losses, seen = [], []
    for i in range(0, len(starts), rows):
        batch = starts[i : i + rows]
        x = np.stack([val[s : s + block] for s in batch]).astype(np.int64)  # (B, T)
        y = np.stack([val[s + 1 : s + block + 1] for s in batch]).reshape(-1)  # (B*T,)
        logits = backend.logits(x).astype(np.float64).reshape(len(y), -1)  # (B*T, V)
        picked = np.arange(len(y)), y
        for j, t in enumerate(TEMPERATURES):
            temp_sums[j] -= log_softmax(logits / t)[picked].sum()
        logp = log_softmax(logits)[picked]  # (B*T,)
        for j, eps in enumerate(MIXES):
            mixed = np.logaddexp(logp + math.log(1 - eps), math.log(eps / cfg.vocab_size))
            mix_sums[j] -= mixed.sum()
        losses.append(-logp)
        seen.append(counts[y])
    loss, count = np.concatenate(losses), np.concatenate(seen)
    n = len(loss)
    print(f"{path}: val loss {loss.mean():.4f} over {n:,} tokens")
    for name, low, high in BANDS:
        band = (count >= low) & (count < high if high is not None else True)
        print(
            f"  train count {name:>5}: {band.mean():6.2%} of tokens, mean loss "
            f"{loss[band].mean():7.3f}, {loss[band].sum() / n:.4f} of the val loss"
        )
    never = (count == 0).mean()
    lacking = int((counts == 0).sum())
    print(
        f"  never-seen tokens spread evenly over the {lacking:,} the train split lacks: "
        f"{-math.log(never / lacking):.3f} nats each"
    )
    by_temperature = zip(TEMPERATURES, temp_sums, strict=True)
    by_mix = zip(MIXES, mix_sums, strict=True)
    print("  temperature: " + ", ".join(f"{t}: {s / n:.4f}" for t, s in by_temperature))
    print("  uniform mix: " + ", ".join(f"{e}: {s / n:.4f}" for e, s in by_mix))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--data", default=None, help="the corpus (default: lal's)")
    args = parser.parse_args()
    for path in args.checkpoints:
        measure(path, args.data)


if __name__ == "__main__":
    main()
