"""Dropout on a CPU, drawn cheaply: what `GPT`'s dropout computes, with masks from fewer draws.

On a CPU, torch draws a dropout mask with `bernoulli_`, one Mersenne Twister number per
element on one thread (about 6 ns each here), and attention with dropout leaves the fused
kernel for the "math" one, which upcasts bf16 to float32 and makes extra passes. For small at
batch 16 that was 10% of the step in masks and another 10% in attention's extra passes
(bench/README.md, "Round three").

While training eagerly on a CPU, the backend's training loss runs the model inside
`CPUDropout` (blocks recomputed in backward too), a TorchFunctionMode that answers two calls
of the model's and leaves every other call alone:
- `F.dropout(x, p)`: the same inverted dropout, x * keep / (1 - p), its mask drawn as 16-bit
  numbers, four from each 64-bit draw of torch's generator (a mask costs a quarter of the
  draws). An element is dropped where its number falls under p's 16-bit threshold, so p is
  rounded to a multiple of 1/65,536 (0.1 drops 6,554 in 65,536, 0.100006).
- `F.scaled_dot_product_attention(q, k, v, dropout_p=p)`: softmax(q k^T / sqrt(hd)) with the
  causal mask, dropout on those weights as above, times v, in the inputs' type (under
  autocast, bf16 products summed in float32, as every matmul).

The masks come from torch's default generator, as `bernoulli_` did: its state is saved with
the optimizer, so a resumed run draws the masks the straight run drew, and recomputed
activations (checkpointing restores the generator) redraw theirs alike. The draws are serial,
so the masks do not depend on the thread count. tests/test_cpu_dropout.py checks both calls
against the formulas with the same masks, and the masks' rate.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_LEVELS = 1 << 16  # a mask's numbers are 16-bit


def keep_scale(shape: torch.Size | tuple[int, ...], p: float, like: torch.Tensor) -> torch.Tensor:
    """A (shape) tensor of `like`'s type and device: 1 / (1 - p) where an element is kept, 0
    where it is dropped (probability round(p * 65,536) / 65,536), from torch's generator."""
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=like.device)
    words.random_(-(2**63), None)  # every bit random (random_() alone leaves the sign bit 0)
    numbers = words.view(torch.int16)[:n].view(shape)  # uniform over [-32,768, 32,767]
    threshold = round(p * _LEVELS) - _LEVELS // 2
    kept = torch.tensor(1.0 / (1.0 - p), dtype=like.dtype, device=like.device)
    return torch.where(numbers >= threshold, kept, torch.zeros((), dtype=like.dtype))


def dropout(x: torch.Tensor, p: float, inplace: bool = False) -> torch.Tensor:
    """Inverted dropout of x with a `keep_scale` mask."""
    mask = keep_scale(x.shape, p, x)
    return x.mul_(mask) if inplace else x * mask


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float, causal: bool, scale=None
) -> torch.Tensor:
    """softmax(q k^T * scale, causal) with dropout p, times v: (B, nh, T, hd) -> (B, nh, T, hd)."""
    T, S = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    att = (q * scale) @ k.transpose(-2, -1)  # (B, nh, T, S)
    if causal:  # position t sees positions <= t (top-left aligned, as SDPA's is_causal)
        hidden = torch.ones(T, S, dtype=torch.bool, device=q.device).triu_(1)
        att = att.masked_fill(hidden, float("-inf"))
    att = torch.softmax(att, dim=-1)
    return dropout(att, p) @ v  # (B, nh, T, hd)


class CPUDropout(TorchFunctionMode):
    """Within it, the model's dropout and attention with dropout on a CPU take `dropout` and
    `attention` above; every other call, and those at p = 0 or in eval, run as they are."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.dropout:
            x, p, training, inplace = _dropout_args(*args, **kwargs)
            if training and 0.0 < p < 1.0 and x.device.type == "cpu":
                return dropout(x, p, inplace)
        elif func is F.scaled_dot_product_attention:
            call = _attention_args(*args, **kwargs)
            if call is not None:
                return attention(*call)
        return func(*args, **kwargs)


def _dropout_args(input, p=0.5, training=True, inplace=False):
    return input, p, training, inplace


def _attention_args(
    query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **rest
):
    """(q, k, v, p, causal, scale) where `attention` computes this call, else None."""
    plain = attn_mask is None and not rest.get("enable_gqa", False)
    if plain and dropout_p > 0.0 and query.device.type == "cpu":
        return query, key, value, dropout_p, is_causal, scale
    return None
