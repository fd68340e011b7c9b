"""The training loss a chunk of rows at a time: cross-entropy of x @ W^T without the logits.

Plainly: loss = F.cross_entropy(x @ W^T, targets, ignore_index=-1, label_smoothing=eps). That
materialises the (B*T, V) logits, keeps their softmax for backward, and allocates both afresh
every step: for tiny at batch 16, 2048 x 50,257 floats = 411 MB each, more than the rest of the
step's memory together, and on a CPU a good part of the step goes to page faults on that fresh
memory.

Instead, for each chunk of rows: its logits into one reused buffer, turned into their softmax
in place (one fused kernel), the target's probability read for the loss, and right away the
gradients: d loss / d logits = (softmax - onehot) / n, so grad_x_c = g @ W and
grad_W += g^T @ x_c, with the 1/n and the ignored rows applied on the small (rows, C) side.
Label smoothing eps makes the target (1 - eps) onehot + eps / V: a row's loss gains
eps * (its target's logit - its mean logit), and its gradient's uniform part, -eps / V in every
column, is taken out of the products as a rank-one term (-eps / V * W's column sums, and
-eps / V * the rows' sum in every row of grad_W), so the vocabulary-wide work is one row mean.
Backward then only scales the stored gradients. Same FLOPs as the plain loss (the backward
matmuls move into forward), a fraction of the memory, and the vocabulary-wide elementwise work
is the softmax's single pass. A chunk is LOSS_CHUNK_ROWS rows (in lal_core/model/cost.py).
tests/test_fast_paths.py checks loss and gradients against the plain formula. Where it pays and
where the plain loss does (compiled, on CUDA): bench/README.md.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F

from lal_core.model.cost import EVAL_LOSS_CHUNK_ROWS, LOSS_CHUNK_ROWS


def linear_cross_entropy(
    x: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk: int | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean cross-entropy of the logits x @ weight^T (x: (N, C), weight: (V, C), targets: (N,),
    -1 ignored; `label_smoothing` as F.cross_entropy's), without the (N, V) logits, `chunk`
    rows at a time (default: LOSS_CHUNK_ROWS, EVAL_LOSS_CHUNK_ROWS without gradients). A compiled
    training step calls it outside the graph (`torch.compiler.disable`), as its Python loop is
    not worth tracing."""
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    if chunk is None:
        chunk = LOSS_CHUNK_ROWS if needs_grad else EVAL_LOSS_CHUNK_ROWS
    return _LinearCrossEntropy.apply(x, weight, targets, chunk, needs_grad, label_smoothing)


_local = threading.local()  # the reused buffers, one set per thread


def _reused(name: str, shape: tuple[int, ...], dtype: torch.dtype, device) -> torch.Tensor:
    """A buffer kept from call to call (a new shape or type replaces it): on a CPU, fresh
    memory every step costs a page fault per 4 KB."""
    buffers = _local.__dict__.setdefault("buffers", {})
    buf = buffers.get(name)
    if buf is None or buf.shape != shape or buf.dtype != dtype or buf.device != device:
        buffers[name] = None  # let the old one go before taking the new
        buf = buffers[name] = torch.empty(shape, dtype=dtype, device=device)
    return buf


def _softmax_(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim, written over the logits on a CPU: its kernel reads each row
    before it writes it, and a second buffer would cost a pass over memory (aten's out= form;
    torch.softmax has none). A 16-bit input is computed in float32 and rounded once."""
    if logits.device.type == "cpu":
        return torch.ops.aten._softmax.out(logits, -1, False, out=logits)
    return torch.softmax(logits, dim=-1)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, targets, chunk, needs_grad, eps):
        (N, C), V = x.shape, weight.shape[0]
        device = x.device
        # Under autocast the matmuls run in its 16-bit type; the loss and gradients sum in
        # float32. Gradients are rounded to the 16-bit type for their matmuls anyway, so their
        # softmax is taken in it (computed in float32, rounded once); a loss alone (an eval,
        # what runs are judged by) takes its softmax in float32.
        autocast_on = torch.is_autocast_enabled(device.type)
        dtype = torch.get_autocast_dtype(device.type) if autocast_on else x.dtype
        with torch.autocast(device.type, enabled=False):
            xs, w = x.to(dtype), weight.to(dtype)
            # x_c @ W^T from a contiguous W^T: twice as fast in bf16 (AMX), no slower in fp32.
            wt = _reused("weight_t", (C, V), dtype, device).copy_(w.t())
            counted = targets != -1
            n = counted.sum().clamp(min=1)
            safe = targets.clamp(min=0)  # (N,): -1 -> 0, masked out below
            # A row's target as an index into its chunk's flattened probabilities (on a CPU,
            # scatter along the 50,257-wide rows walks the whole chunk: 30 ms).
            at = torch.arange(min(chunk, N), device=device) * V  # (rows,)
            p_target = torch.empty(N, device=device, dtype=torch.float32)
            # Smoothing's part of each row's loss: its target's logit minus its mean logit.
            smoothed = torch.zeros(N, device=device, dtype=torch.float32) if eps else None
            buffer = _reused("probs", (min(chunk, N), V), dtype, device)
            exact = None
            if dtype != torch.float32 and not needs_grad:
                exact = _reused("exact", buffer.shape, torch.float32, device)
            if needs_grad:
                grad_x = torch.empty(x.shape, device=device, dtype=x.dtype)
                grad_w = torch.zeros_like(weight)
                low_w = (
                    None if dtype == weight.dtype else _reused("grad_w16", w.shape, dtype, device)
                )
                kept = xs * counted.unsqueeze(1).to(dtype)  # ignored rows add nothing to grad_w
                row_factor = (counted / n).unsqueeze(1)  # (N, 1): 1/n, or 0 where ignored
                if eps:  # the uniform part of every row's gradient, times W: (C,)
                    uniform_x = (eps / V) * w.sum(dim=0, dtype=torch.float32).to(dtype)
            for s in range(0, N, chunk):
                xc = xs[s : s + chunk]  # (rows, C)
                rows = xc.shape[0]
                logits = torch.mm(xc, wt, out=buffer[:rows])  # (rows, V)
                if exact is not None:
                    logits = exact[:rows].copy_(logits)
                target = at[:rows] + safe[s : s + chunk]
                if smoothed is not None:  # read before the softmax overwrites the logits
                    mean = logits.mean(dim=-1, dtype=torch.float32)  # (rows,)
                    smoothed[s : s + chunk] = logits.view(-1)[target].float() - mean
                probs = _softmax_(logits)  # (rows, V), over the logits on a CPU
                flat = probs.view(-1)
                p = flat[target]  # (rows,): each row's probability of its target
                p_target[s : s + chunk] = p
                if needs_grad:
                    # d loss / d logits = softmax - (1 - eps) onehot - eps / V (times 1/n)
                    flat[target] = p - (1 - eps)
                    grad_xc = torch.mm(probs, w)  # (rows, C)
                    if eps:
                        grad_xc -= uniform_x
                    grad_x[s : s + chunk] = grad_xc * row_factor[s : s + chunk]
                    if low_w is None:
                        grad_w.addmm_(probs.t(), kept[s : s + chunk])
                    else:  # summed in float32, each chunk's product rounded once
                        grad_w += torch.mm(probs.t(), kept[s : s + chunk], out=low_w)
            losses = -p_target.log()  # (N,)
            if smoothed is not None:
                losses += eps * smoothed
            losses = torch.where(counted, losses, 0.0)
            _exact_where_underflowed(losses, p_target, counted, xs, w, safe, chunk, eps)
            if needs_grad and eps:  # the uniform part of grad_W: the same row for every token
                grad_w -= (eps / V) * kept.sum(dim=0, dtype=torch.float32).to(grad_w.dtype)
        # Kept on ctx, not saved: backward hands them to autograd, which then takes them as
        # they are instead of copying a tensor something else still holds. grad_w's 1/n is
        # applied there, with the incoming gradient, in one pass.
        ctx.grads = (grad_x, grad_w, n) if needs_grad else None
        return losses.sum() / n

    @staticmethod
    def backward(ctx, grad_loss):
        if ctx.grads is None:
            raise RuntimeError("the chunked loss's backward runs once (no retain_graph)")
        grad_x, grad_w, n = ctx.grads
        ctx.grads = None
        return grad_x.mul_(grad_loss), grad_w.mul_(grad_loss / n), None, None, None, None


def _exact_where_underflowed(losses, p_target, counted, xs, w, safe, chunk, eps) -> None:
    """A target's probability under the smallest normal float (in float32 and bf16, a loss
    over 87) has lost its digits or is 0: those rows' losses are recomputed from their logits,
    `chunk` rows at a time. Rare (a diverging run) and so cheap; on a GPU the check costs one
    sync per call."""
    lost = counted & (p_target < torch.finfo(xs.dtype).tiny)
    if not bool(lost.any()):
        return
    lost_rows = lost.nonzero().squeeze(1)
    for rows in lost_rows.split(chunk):
        logits = torch.mm(xs[rows], w.t()).float()  # (k, V)
        losses[rows] = F.cross_entropy(logits, safe[rows], reduction="none", label_smoothing=eps)
