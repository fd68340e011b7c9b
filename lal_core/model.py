"""The GPT, in PyTorch: a decoder-only transformer in the GPT-2 style.

Read it top to bottom. Shapes use B = batch, T = time (positions), C = channels (n_embd),
nh = heads, hd = head size (C // nh), V = vocabulary size.

    tokens (B, T)
      -> token embedding + position embedding            (B, T, C)
      -> n_layer x Block: x + attn(ln_1(x)), x + mlp(ln_2(x))
      -> final LayerNorm
      -> logits = x @ token_embedding^T  (weight tying)   (B, T, V)

Training never holds the whole (B, T, V) logits tensor: `linear_cross_entropy`, at the end of
this file, computes the head and the loss a few rows at a time (the logits are the biggest
tensor by far: 411 MB for tiny at batch 16).

The MLX twin of this file is `lal_core/backends/mlx_model.py`: same names, same shapes.
"""

from __future__ import annotations

import math
import threading

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from lal_core.config import LOSS_CHUNK_ROWS, ModelConfig


class KVCache:
    """Keys and values of the positions already seen, so each new token costs one position.

    Preallocated to block_size positions per layer; `length` says how many are filled.
    """

    def __init__(self, cfg: ModelConfig, batch: int, device, dtype) -> None:
        shape = (batch, cfg.n_head, cfg.block_size, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.length = 0


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # Q, K, V in one
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)  # merge the heads
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        # Split channels into heads: each head attends in its own hd-sized subspace.
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hd)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hd)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hd)

        causal = True
        if cache is not None:
            # Generation: store this step's keys/values (in the cache's dtype) for later steps.
            start = cache.length
            assert start == 0 or T == 1, "the cache takes a prompt, then one token at a time"
            cache.k[layer][:, :, start : start + T] = k
            cache.v[layer][:, :, start : start + T] = v
            if start > 0:
                # A new token looks at every earlier position, and at itself.
                k = cache.k[layer][:, :, : start + T]  # (B, nh, start+T, hd)
                v = cache.v[layer][:, :, : start + T]
                causal = False
            # A prompt (start 0) attends causally over its own keys, as in training.

        # softmax(q k^T / sqrt(hd)) v, where position t sees positions <= t only.
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again: (B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)  # widen 4x
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)  # back to C
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: normalise, transform, add back to the residual stream."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0):
        x = x + self.attn(self.ln_1(x), cache, layer)  # tokens exchange information
        x = x + self.mlp(self.ln_2(x))  # each token thinks on its own
        return x


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)  # token -> vector
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)  # position -> vector
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        # How the training loss is computed: in row chunks (the default; see the end of this
        # file) or plainly, with full logits. The backend picks per device.
        self.chunked_loss = True
        # Activation checkpointing: keep only each block's input for backward, and run the
        # block again there. A third more compute for a fraction of the memory; the backend
        # turns it on where the saved activations would be large.
        self.recompute = False
        # No separate output head: the logits reuse wte's weight (weight tying, as in GPT-2).
        self.apply(self._init_weights)
        # GPT-2: scale the projections into the residual stream by 1/sqrt(2 * n_layer), so the
        # stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # Small normal weights and zero biases: the untrained model's logits are all near 0, so
        # it guesses uniformly and its loss starts at ln(V) = ln(50257) ~ 10.83.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(logits, None) without targets; (None, mean cross-entropy) with targets, where a
        target of -1 is ignored.

        Logits are (B, T, V), or (B, 1, V) with last_only (sampling needs only the last
        position's). With a cache, idx holds only the new positions and their logits come back.
        """
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        assert start + T <= self.config.block_size, "context longer than block_size"
        pos = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C) + (T, C) -> (B, T, C)
        for layer, block in enumerate(self.blocks):
            if self.recompute and torch.is_grad_enabled():
                # Same values and gradients; the block's dropout masks are drawn again alike.
                x = checkpoint(block, x, use_reentrant=False)  # (B, T, C)
            else:
                x = block(x, cache, layer)  # (B, T, C)
        if cache is not None:
            cache.length += T
        if last_only:
            x = x[:, -1:, :]  # (B, 1, C): the head is a third of small's weights; skip the rest
        x = self.ln_f(x)  # (B, T, C)
        if targets is None:
            return self.head(x), None  # (B, T, V): a score for every next token
        if not self.chunked_loss:
            # Plainly: all (B*T, V) logits, then the mean cross-entropy (float32 for accuracy).
            logits = self.head(x).view(B * T, -1)  # (B*T, V)
            return None, F.cross_entropy(logits.float(), targets.reshape(B * T), ignore_index=-1)
        # The same head, x @ wte^T, and the mean cross-entropy, in row chunks: see below.
        loss = linear_cross_entropy(x.reshape(B * T, -1), self.wte.weight, targets.reshape(B * T))
        return None, loss

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """The logits x @ wte^T, (..., C) -> (..., V). A sampling copy may replace it with an
        int8 one (`lal_core/int8_head.py`)."""
        return F.linear(x, self.wte.weight)


# -- The loss, a chunk of rows at a time ------------------------------------------------------
# Plainly: loss = F.cross_entropy(x @ W^T, targets, ignore_index=-1). That materialises the
# (B*T, V) logits, keeps their softmax for backward, and allocates both afresh every step: for
# tiny at batch 16, 2048 x 50,257 floats = 411 MB each, more than the rest of the step's memory
# together, and on a CPU a good part of the step goes to page faults on that fresh memory.
# Instead, for each chunk of rows: its logits into one reused buffer, softmax in place, the
# chunk's loss, and right away its gradients (d loss / d logits = (softmax - onehot) / n),
# grad_x_c = g @ W and grad_W += g^T @ x_c. Backward then only scales the stored gradients.
# Same FLOPs as the plain loss (the backward matmuls move into forward), a fraction of the
# memory. A chunk is LOSS_CHUNK_ROWS rows (512, in lal_core/config.py: a 103 MB buffer for
# GPT-2's vocabulary). tests/test_speed.py checks loss and gradients against the plain formula.
# On a CUDA GPU the plain loss is faster, and compiled it takes less memory than this (the
# compiler fuses the softmax into the loss); see lal_core/backends/torch_backend.py.


def linear_cross_entropy(
    x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = LOSS_CHUNK_ROWS
) -> torch.Tensor:
    """Mean cross-entropy of the logits x @ weight^T (x: (N, C), weight: (V, C), targets: (N,),
    -1 ignored), without the (N, V) logits. Compiled training keeps it out of the graph (see
    `keep_loss_out_of_compile`)."""
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    return _LinearCrossEntropy.apply(x, weight, targets, chunk, needs_grad)


def keep_loss_out_of_compile() -> None:
    """Make torch.compile call the chunked loss as it is rather than trace its Python loop.

    Done on first compile, not as a decorator: `torch.compiler.disable` imports the compiler
    stack, which would add seconds to every `import lal_core.model`.
    """
    global linear_cross_entropy
    if not getattr(linear_cross_entropy, "_lal_outside_compile", False):
        linear_cross_entropy = torch.compiler.disable(linear_cross_entropy)
        linear_cross_entropy._lal_outside_compile = True


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
            # W @ x_c^T faster than x_c @ W^T (tiny's forward product 1.5x, the chunked loss
            # with its gradients 1.1x, on a 2-core AVX2 CPU), and the gradient products read
            # that layout as fast.
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
