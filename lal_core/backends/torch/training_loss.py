"""The training loss as the PyTorch backend computes it: `GPT.forward`'s loss, with the two
memory savers a device may want, chosen by the backend (`precision` has the defaults):

- chunked: the head and the cross-entropy a few rows at a time (`chunked_loss`), so
  the (B*T, V) logits never exist;
- recompute: activation checkpointing, each block's input kept for backward and the block run
  again there, a third more compute for a fraction of the memory.

And one for speed, eager on a CPU: cpu_dropout, dropout's masks from a quarter of the draws
(`cpu_dropout`; the same function, from other random numbers).

Either way the loss and its gradients are those of `model(idx, targets)[1]` with the same
dropout masks (tests/test_fast_paths.py and tests/test_cpu_dropout.py check them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from lal_core.backends.torch.chunked_loss import linear_cross_entropy
from lal_core.backends.torch.cpu_dropout import CPUDropout
from lal_core.model.gpt import GPT

# x (N, C), weight (V, C), targets (N,), label_smoothing= -> the mean loss
LossOfRows = Callable[..., torch.Tensor]


def recomputed_hidden_states(
    model: GPT, idx: torch.Tensor, masks: Callable = contextlib.nullcontext
) -> torch.Tensor:
    """`model.hidden_states(idx)`, keeping only each block's input for backward; `masks` is
    the context the blocks run in, entered again for their recomputation in backward."""
    T = idx.shape[1]
    x = model.drop(model.wte(idx) + model.wpe(torch.arange(T, device=idx.device)))  # (B, T, C)

    def contexts():  # forward's (already inside `masks`), then the recomputation's
        return contextlib.nullcontext(), masks()

    for block in model.blocks:
        # Same values and gradients; the block's dropout masks are drawn again alike.
        x = checkpoint(block, x, use_reentrant=False, context_fn=contexts)  # (B, T, C)
    return model.ln_f(x)


@dataclass(frozen=True)
class TrainingLoss:
    """model, idx (B, T), targets (B, T) -> the mean cross-entropy, -1 targets ignored, with
    `label_smoothing` of the targets (TrainConfig's; evals score without it)."""

    chunked: bool
    recompute: bool
    rows_loss: LossOfRows = linear_cross_entropy  # a compiled step passes it un-traced
    cpu_dropout: bool = False
    label_smoothing: float = 0.0

    def __call__(self, model: GPT, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        masks = CPUDropout if self.cpu_dropout else contextlib.nullcontext
        with masks():
            return self._loss(model, idx, targets, masks)

    def _loss(self, model: GPT, idx, targets, masks: Callable) -> torch.Tensor:
        if self.recompute and torch.is_grad_enabled():
            x = recomputed_hidden_states(model, idx, masks)  # (B, T, C)
        else:
            x = model.hidden_states(idx)  # (B, T, C)
        if self.chunked:
            return self.rows_loss(
                x.flatten(0, 1),
                model.wte.weight,
                targets.flatten(),
                label_smoothing=self.label_smoothing,
            )
        logits = model.head(x).flatten(0, 1)  # (B*T, V)
        return F.cross_entropy(
            logits.float(),
            targets.flatten(),
            ignore_index=-1,
            label_smoothing=self.label_smoothing,
        )
