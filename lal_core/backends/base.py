"""What a backend supplies: the parts of training and sampling that depend on the framework.

Everything else (the schedule, batches, eval cadence, early stopping, checkpoints, events,
logging, stop handling, the sampling loop) is written once, in `lal_core.model.recipe`,
`lal_core.training` and `lal_core.generation`, and drives a `Backend` through these methods.
Arrays cross this seam as numpy: int64 token batches in, float32 weights out, in the canonical
checkpoint layout (the PyTorch module names, Linear weights as (out, in)).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from lal_core.backends.distributed import ONE_PROCESS, Ranks
from lal_core.errors import ConfigError
from lal_core.model.config import ModelConfig
from lal_core.model.recipe import TrainConfig


class Backend(ABC):
    name: str  # "torch" or "mlx"
    device: str  # for people: torch "cpu", "cuda", "mps"; mlx "cpu", "gpu" (shown as name/device)
    ranks: Ranks = ONE_PROCESS  # the ranks it trains with (`use_ranks`); one process by default

    def __init__(self, cfg: ModelConfig) -> None:
        self.cfg = cfg

    # -- the model ---------------------------------------------------------------------------
    @abstractmethod
    def num_parameters(self) -> int:
        """Trainable parameters, the tied embedding counted once."""

    @abstractmethod
    def state_dict(self) -> dict[str, np.ndarray]:
        """All weights as float32 numpy arrays under their canonical names."""

    @abstractmethod
    def load_state_dict(self, tensors: dict[str, np.ndarray]) -> None:
        """Replace all weights (names and shapes already checked by the caller)."""

    @abstractmethod
    def logits(self, x: np.ndarray) -> np.ndarray:
        """Float32 logits (B, T, V) for int64 tokens x (B, T), in eval mode."""

    def describe(self) -> str:
        """The fast paths in use, for a run's header (e.g. `float32, eager, fused AdamW`)."""
        return ""

    def preparing(self) -> str:
        """What setup_training is about to spend a while on, for people ('' if nothing)."""
        return ""

    def peak_flops(self) -> float | None:
        """The device's peak FLOP/s that MFU is measured against (None: unknown)."""
        return None

    def training_peak(self, peak_tflops: float | None = None) -> float | None:
        """FLOP/s for a run's MFU: the user's --peak-tflops, else the device's (`peak_flops`);
        times the ranks, as the tokens/s it is set against are all the ranks' together."""
        peak = peak_tflops * 1e12 if peak_tflops else self.peak_flops()
        return peak * self.ranks.world if peak else peak

    # -- training ----------------------------------------------------------------------------
    def use_ranks(self, ranks: Ranks) -> None:
        """Train as one of `ranks` (data parallel, `lal_core.backends.distributed`); before
        setup_training. Ranks started by another framework's launcher are refused."""
        if ranks.joined and ranks.via != self.name:
            launcher = {"torch": "torchrun", "mlx": "mlx.launch"}
            raise ConfigError(
                f"the {self.name} backend trains on ranks started by "
                f"{launcher.get(self.name, 'no launcher')}, not {launcher[ranks.via]}; use "
                f"--backend {ranks.via} under {launcher[ranks.via]}"
            )
        self.ranks = ranks

    @abstractmethod
    def setup_training(self, train_cfg: TrainConfig) -> None:
        """Create the optimizer (AdamW, the recipe's betas and weight decay)."""

    @abstractmethod
    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        """One optimisation step at learning rate `lr`, clipped; returns the batch loss. The
        batch runs as `passes(x, y, micro)` with the micro batch of setup_training's config,
        its gradients accumulated: the step is the whole batch's.

        A non-finite gradient skips the update (the weights stay as they were) and returns nan;
        under float16 a GradScaler skips such a step itself and the loss comes back as it is.
        """

    def gradients(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """The gradient of the batch's loss as `train_step` accumulates it, before clipping, by
        parameter name (float32); the weights do not change. For checks and tests."""
        raise NotImplementedError

    @abstractmethod
    def eval_loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """Mean cross-entropy over the counted targets of a batch, without dropout or grads."""

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """Everything besides the weights that exact resume needs, as numpy arrays: the
        optimizer's step count ("step") and moments ("m.<name>", "v.<name>"), the framework's
        random-generator state ("rng.<which>", for dropout) and, with an ema decay, the
        weights' average ("ema.<name>")."""
        raise NotImplementedError

    def load_optimizer_state(self, tensors: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    # -- the weights' moving average (TrainConfig.ema) ---------------------------------------
    # With an ema decay, setup_training starts the average and every train_step that updates
    # the weights moves it: average <- decay * average + (1 - decay) * weights, from the
    # weights after the first step. A float32 copy of the weights, kept on their device.
    def average_state_dict(self) -> dict[str, np.ndarray]:
        """The average as float32 numpy arrays under the weights' names."""
        raise NotImplementedError

    @contextlib.contextmanager
    def averaged_weights(self, swap: bool = True) -> Iterator[None]:
        """The average in the weights' place inside the block (its evals, its checkpoint), the
        weights themselves back after it, exactly; the weights as they are if not `swap`."""
        if not swap:
            yield
            return
        weights = self.state_dict()
        self.load_state_dict(self.average_state_dict())
        try:
            yield
        finally:
            self.load_state_dict(weights)

    # -- sampling ----------------------------------------------------------------------------
    def ready_for_sampling(self) -> None:  # noqa: B027 - optional: most backends need nothing
        """Prepare what sampling these weights needs (a 16-bit copy, a quantised head) now,
        where loading waits anyway, not in the first token's."""

    # A generation draws `rows` samples of one prompt together, one sequence per row; the loop
    # that drives these methods, and the draw itself, are `lal_core.generation.sampling`'s.
    @abstractmethod
    def start_generation(self, rows: int) -> None:
        """Begin a generation of `rows` sequences (drops the last one's cache and seen tokens)."""

    @abstractmethod
    def prefill(self, contexts: np.ndarray, use_cache: bool = True) -> Any:
        """Run int64 contexts (rows, T), T <= block_size, or (1, T): one context for every row;
        the last position's logits (rows, V).

        With use_cache the keys and values are kept so `extend` can add one token at a time.
        """

    @abstractmethod
    def extend(self, tokens: np.ndarray) -> Any:
        """Append one token (rows,) to each row's cached context; their logits (rows, V)."""

    @abstractmethod
    def see(self, tokens: np.ndarray) -> None:
        """Mark tokens (rows, n) as seen in each row's context, for the repetition penalty."""

    @abstractmethod
    def candidates(
        self, logits: Any, top_k: int | None, repetition_penalty: float, with_lse: bool
    ) -> Candidates:
        """Each row's tokens that may be drawn: the repetition penalty applied to the tokens
        seen (1: off), then the top k (None: all V, in id order)."""


def passes(
    x: np.ndarray, y: np.ndarray, micro: int, ranks: Ranks = ONE_PROCESS
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """This rank's rows of a global batch (`ranks.rows`; all of it in one process) as forward
    passes of `micro` rows, each with the weight of its mean loss in the global batch's: its
    share of the batch's counted targets (not -1). Pre-training counts every target, so its
    passes weigh the same; SFT's weigh by the answer tokens they hold. In one process a pass
    with no counted target is left out (its mean would be 0/0) and a batch with none is one
    pass; on several ranks every pass is kept, as every rank must take part in each step.
    """
    counted = int((y != -1).sum())
    mine = ranks.rows(len(x))
    x, y = x[mine], y[mine]
    if ranks.world == 1 and (len(x) <= micro or counted == 0):
        return [(x, y, 1.0)]
    out = []
    for i in range(0, len(x), micro):
        share = int((y[i : i + micro] != -1).sum()) / counted if counted else 0.0
        if share or ranks.world > 1:
            out.append((x[i : i + micro], y[i : i + micro], share))
    return out


@dataclass(frozen=True)
class Candidates:
    """The tokens each row may draw from, as numpy, for `lal_core.generation.sampling.draw`."""

    logits: np.ndarray  # (rows, k) float32: after the repetition penalty, before temperature
    ids: np.ndarray | None  # (rows, k) int64 token ids; None: all V tokens, in id order
    lse: np.ndarray | None  # (rows,) log-sum-exp of each row's full logits, when asked for
