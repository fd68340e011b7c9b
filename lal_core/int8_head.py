"""An int8 copy of the output head, for sampling on CPUs without native bf16.

A one-token sampling step reads every weight once, and the head, x @ wte^T with wte (V, C), is
most of them: 6.4M of tiny's 7.2M. On an AVX2 CPU a bf16 matrix-vector product is converted in
software and runs at a fraction of the memory's speed (tiny's head: 1.5 ms a token, half the
step). Stored as int8 with one scale per vocabulary row (weight-only, symmetric: w ~ q * s,
q in [-127, 127]) it is half the bytes again and has a vectorised kernel,
`torch.ops.aten._weight_int8pack_mm`, the one torchao's int8 weight-only layout calls.

The rounding error per weight is at most s/2, about 0.4% of the row's largest weight: of the
order of bf16's own rounding (tests/test_speed.py compares the next-token distributions).
"""

from __future__ import annotations

import functools

import torch

_INT8_MM = getattr(torch.ops.aten, "_weight_int8pack_mm", None)
BLOCK_ROWS = 2048  # rows quantised at a time


class Int8Head:
    """x @ weight^T for x in `dtype` (bfloat16), with weight stored as int8 rows and scales."""

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> None:
        w = weight.detach().float()  # (V, C), quantised from the float32 master weights
        self.scales = torch.empty(w.shape[0], dtype=dtype, device=w.device)  # (V,)
        self.weight = torch.empty(w.shape, dtype=torch.int8, device=w.device)  # (V, C)
        # A block of rows at a time: the temporaries stay small and in cache (tiny's head in
        # 6 ms, small's in 12, against 50 and 150 for whole-matrix passes, which would delay
        # a generation's second token).
        for r in range(0, w.shape[0], BLOCK_ROWS):
            block = slice(r, r + BLOCK_ROWS)
            rows = w[block]
            # The kernel takes the scales in x's dtype: q is rounded against the scale it will
            # use. (That scale may be a hair under amax / 127, so the clamp moves a row's
            # largest weight by half a step at most.)
            scale = (rows.abs().amax(dim=1).clamp_(min=1e-30) / 127).to(dtype)
            self.scales[block] = scale
            q = rows.mul(scale.float().reciprocal().unsqueeze(1)).round_().clamp_(-127, 127)
            self.weight[block] = q

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1]).to(self.scales.dtype).contiguous()  # (N, C)
        logits = _INT8_MM(rows, self.weight, self.scales)  # (N, V), in the scales' dtype
        return logits.view(*x.shape[:-1], -1)


@functools.cache
def int8_head_works(device: torch.device) -> bool:
    """Whether this torch has the int8 kernel for `device` (it is a private op: checked by use)."""
    if _INT8_MM is None:
        return False
    try:
        x = torch.ones((1, 8), dtype=torch.bfloat16, device=device)
        q = torch.ones((3, 8), dtype=torch.int8, device=device)
        s = torch.ones(3, dtype=torch.bfloat16, device=device)
        return bool((_INT8_MM(x, q, s) == 8).all())
    except (RuntimeError, NotImplementedError):
        return False
