"""An int8 copy of the output head, for sampling on CPUs.

A one-token sampling step reads every weight once, and the head, x @ wte^T with wte (V, C), is
most of them: 6.4M of tiny's 7.2M. On an AVX2 CPU a bf16 matrix-vector product is converted in
software and runs at a fraction of the memory's speed. Stored as int8 with one scale per
vocabulary row (weight-only, symmetric: w ~ q * s, q in [-127, 127]) it is half the bytes
again and has a vectorised kernel, `torch.ops.aten._weight_int8pack_mm`, the one torchao's
int8 weight-only layout calls. Measurements: bench/README.md.

The rounding error per weight is at most s/2, about 0.4% of the row's largest weight: of the
order of bf16's own rounding (tests/test_fast_paths.py compares the next-token distributions).
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
        # A block of rows at a time: the temporaries stay small and in cache (several times
        # faster than whole-matrix passes, which would delay a generation's second token).
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


PROBE_PATTERNS = 7  # distinct rows in the probe's matrix (not a power of two: see below)


@functools.cache
def int8_head_works(
    device: torch.device, in_features: int, out_features: int, rows: int = 1
) -> bool:
    """Whether the int8 kernel computes a head of this shape, for `rows` tokens at a time (the
    samples drawn together), correctly on `device`.

    It is a private op, so it is checked by use, at the head's own shape and against a float
    product. At other shapes it has been seen to crash the process (a segmentation fault on
    an AVX-512 CPU for (1, 8) x (3, 8), which no `try` can catch) or to return garbage ((1, 24)
    x (50257, 24)), so nothing but the shape the head will really use is ever run.
    """
    if _INT8_MM is None:
        return False
    K, N = in_features, out_features
    gen = torch.Generator().manual_seed(0)
    # Row i of the weights is pattern i % 7, so the exact product costs 7 dot products instead
    # of N; 7 rows repeating across the blocks a kernel works in still shows a misplaced row.
    patterns = torch.randint(-127, 128, (PROBE_PATTERNS, K), dtype=torch.int8, generator=gen)
    pattern = torch.arange(N) % PROBE_PATTERNS
    scales = torch.rand(N, generator=gen).add_(0.5).to(torch.bfloat16)  # (N,)
    x = torch.randn(rows, K, generator=gen).to(torch.bfloat16)  # (rows, K)
    exact = (x.float() @ patterns.float().t())[:, pattern] * scales.float()  # (rows, N)
    try:
        got = _INT8_MM(x.to(device), patterns[pattern].to(device), scales.to(device))  # (rows, N)
    except (RuntimeError, NotImplementedError):
        return False
    error = (got.float().cpu() - exact).abs().max()
    # bfloat16 logits are rounded to 2**-8 of their size; a wrong kernel is off by far more.
    return bool(error <= 2e-2 * exact.abs().max())
