"""The training loss a chunk of rows at a time: cross-entropy of x @ W^T without the logits.

Plainly: loss = F.cross_entropy(x @ W^T, targets, ignore_index=-1). That materialises the
(B*T, V) logits, keeps their softmax for backward, and allocates both afresh every step: for
tiny at batch 16, 2048 x 50,257 floats = 411 MB each, more than the rest of the step's memory
together, and on a CPU a good part of the step goes to page faults on that fresh memory.

Instead, for each chunk of rows: its logits into one reused buffer, softmax in place, the
chunk's loss, and right away its gradients (d loss / d logits = (softmax - onehot) / n),
grad_x_c = g @ W and grad_W += g^T @ x_c. Backward then only scales the stored gradients. Same
FLOPs as the plain loss (the backward matmuls move into forward), a fraction of the memory. A
chunk is LOSS_CHUNK_ROWS rows (512, in lal_core/config.py: a 103 MB buffer for GPT-2's
vocabulary). tests/test_speed.py checks loss and gradients against the plain formula. Where it
pays and where the plain loss does (compiled, on CUDA): bench/README.md.
"""

from __future__ import annotations

import threading

import torch

from lal_core.config import EVAL_LOSS_CHUNK_ROWS, LOSS_CHUNK_ROWS


def linear_cross_entropy(
    x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int | None = None
) -> torch.Tensor:
    """Mean cross-entropy of the logits x @ weight^T (x: (N, C), weight: (V, C), targets: (N,),
    -1 ignored), without the (N, V) logits, `chunk` rows at a time (default: LOSS_CHUNK_ROWS,
    EVAL_LOSS_CHUNK_ROWS without gradients). A compiled training step calls it outside the
    graph (`torch.compiler.disable`), as its Python loop is not worth tracing."""
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    if chunk is None:
        chunk = LOSS_CHUNK_ROWS if needs_grad else EVAL_LOSS_CHUNK_ROWS
    return _LinearCrossEntropy.apply(x, weight, targets, chunk, needs_grad)


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


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, targets, chunk, needs_grad):
        N, V = x.shape[0], weight.shape[0]
        device = x.device
        # Under autocast the matmuls run in its 16-bit type; softmax and sums stay float32.
        autocast_on = torch.is_autocast_enabled(device.type)
        dtype = torch.get_autocast_dtype(device.type) if autocast_on else x.dtype
        sixteen = dtype != torch.float32
        with torch.autocast(device.type, enabled=False):
            xs, w = x.to(dtype), weight.to(dtype)
            counted = targets != -1
            n = counted.sum().clamp(min=1)
            safe = targets.clamp(min=0).unsqueeze(0)  # (1, N): -1 -> 0, masked out below
            grad_x = torch.empty(x.shape, device=device, dtype=x.dtype) if needs_grad else None
            grad_w = torch.zeros_like(weight) if needs_grad else None
            # The logits are held transposed, (V, rows), a column per row of x: MKL computes
            # W @ x_c^T faster than x_c @ W^T, and the gradient products read that layout as
            # fast (measured: bench/README.md).
            cols = min(chunk, N)
            buffer = _reused("logits", (V, cols), torch.float32, device)
            # 16 bits: the matmuls write into 16-bit buffers, copied to and from float32.
            low = _reused("logits16", (V, cols), dtype, device) if sixteen else None
            low_w = _reused("grad_w16", w.shape, dtype, device) if sixteen and needs_grad else None
            total = torch.zeros((), device=device, dtype=torch.float32)
            for s in range(0, N, chunk):
                xc, rows = xs[s : s + chunk], min(chunk, N - s)
                target = safe[:, s : s + chunk]  # (1, rows)
                logits = buffer[:, :rows]  # (V, rows), float32
                if sixteen:  # the product in 16 bits, the softmax in float32
                    logits.copy_(torch.mm(w, xc.t(), out=low[:, :rows]))
                else:
                    torch.mm(w, xc.t(), out=logits)
                # loss = logsumexp(logits) - logits[target], computed stably, in place.
                logits.sub_(logits.amax(dim=0, keepdim=True))
                target_logit = logits.gather(0, target).squeeze(0)  # (rows,)
                sums = logits.exp_().sum(dim=0)  # logits now hold exp(logits - max)
                keep = counted[s : s + chunk]
                total += ((sums.log() - target_logit) * keep).sum()
                if needs_grad:
                    # d loss / d logits = (softmax - onehot) * keep / n
                    #                   = (exp(logits - max) - sums * onehot) * keep / (n * sums):
                    # the row factors on the small side, one pass over the buffer instead of two.
                    logits.scatter_add_(0, target, -sums.unsqueeze(0))
                    g = logits.mul_(keep / (n * sums))  # ignored rows get no gradient
                    if sixteen:
                        g = low[:, :rows].copy_(g)
                        grad_x[s : s + chunk] = torch.mm(g.t(), w)  # (rows, C): small
                        grad_w += torch.mm(g, xc, out=low_w)
                    else:  # write into place, no new memory
                        torch.mm(g.t(), w, out=grad_x[s : s + chunk])
                        grad_w.addmm_(g, xc)
        ctx.save_for_backward(grad_x, grad_w)
        return total / n

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_w = ctx.saved_tensors
        return grad_x * grad_loss, grad_w * grad_loss, None, None, None
