"""The training loss as the PyTorch backend computes it: `GPT.forward`'s loss, with the two
memory savers a device may want, chosen by the backend (`precision` has the defaults):

- chunked: the head and the cross-entropy a few rows at a time (`chunked_loss`), so
  the (B*T, V) logits never exist;
- recompute: activation checkpointing, each block's input kept for backward and the block run
  again there, a third more compute for a fraction of the memory.

Either way the loss and its gradients are those of `model(idx, targets)[1]`
(tests/test_fast_paths.py checks both).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from lal_core.backends.torch.chunked_loss import linear_cross_entropy
from lal_core.model.gpt import GPT

LossOfRows = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def recomputed_hidden_states(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """`model.hidden_states(idx)`, keeping only each block's input for backward."""
    T = idx.shape[1]
    x = model.drop(model.wte(idx) + model.wpe(torch.arange(T, device=idx.device)))  # (B, T, C)
    for block in model.blocks:
        # Same values and gradients; the block's dropout masks are drawn again alike.
        x = checkpoint(block, x, use_reentrant=False)  # (B, T, C)
    return model.ln_f(x)


@dataclass(frozen=True)
class TrainingLoss:
    """model, idx (B, T), targets (B, T) -> the mean cross-entropy, -1 targets ignored."""

    chunked: bool
    recompute: bool
    rows_loss: LossOfRows = linear_cross_entropy  # a compiled step passes it un-traced

    def __call__(self, model: GPT, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        recompute = self.recompute and torch.is_grad_enabled()
        x = recomputed_hidden_states(model, idx) if recompute else model.hidden_states(idx)
        if self.chunked:
            return self.rows_loss(x.flatten(0, 1), model.wte.weight, targets.flatten())
        logits = model.head(x).flatten(0, 1)  # (B*T, V)
        return F.cross_entropy(logits.float(), targets.flatten(), ignore_index=-1)
