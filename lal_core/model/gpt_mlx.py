"""The GPT, in MLX: the twin of `lal_core/model/gpt.py`, module for module.

Read it side by side with the PyTorch file. The module names are the same, so the parameter
paths ("blocks.0.attn.c_attn.weight", ...) are the canonical checkpoint names, and Linear
weights are (out, in) in both frameworks. Shapes use B = batch, T = time (positions),
C = channels (n_embd), nh = heads, hd = head size (C // nh), V = vocabulary size.

    tokens (B, T)
      -> token embedding + position embedding            (B, T, C)
      -> n_layer x Block: x + attn(ln_1(x)), x + mlp(ln_2(x))
      -> final LayerNorm
      -> logits = x @ token_embedding^T  (weight tying)   (B, T, V)

MLX is lazy: these functions build a graph, and nothing is computed until `mx.eval` (or a
conversion to numpy / Python) asks for a result.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from lal_core.model.config import ModelConfig


class KVCache:
    """Keys and values of the positions already seen, so each new token costs one position.

    MLX arrays are values, not buffers: each step appends by concatenation; `length` says how
    many positions are held.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        self.k: list[mx.array | None] = [None] * cfg.n_layer  # per layer: (B, nh, length, hd)
        self.v: list[mx.array | None] = [None] * cfg.n_layer
        self.length = 0

    def broadcast(self, rows: int) -> None:
        """One row's keys and values (a prompt shared by every sample) for each of `rows`."""
        self.k = [mx.broadcast_to(k, (rows, *k.shape[1:])) for k in self.k]
        self.v = [mx.broadcast_to(v, (rows, *v.shape[1:])) for v in self.v]


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # Q, K, V in one
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)  # merge the heads
        self.dropout = cfg.dropout  # on the attention weights, while training
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.proj_dropout = nn.Dropout(cfg.dropout if cfg.attn_proj_dropout else 0.0)

    def __call__(self, x: mx.array, cache: KVCache | None = None, layer: int = 0) -> mx.array:
        B, T, C = x.shape
        hd = C // self.n_head
        q, k, v = mx.split(self.c_attn(x), 3, axis=2)  # 3 x (B, T, C)
        # Split channels into heads: each head attends in its own hd-sized subspace.
        q = q.reshape(B, T, self.n_head, hd).transpose(0, 2, 1, 3)  # (B, nh, T, hd)
        k = k.reshape(B, T, self.n_head, hd).transpose(0, 2, 1, 3)  # (B, nh, T, hd)
        v = v.reshape(B, T, self.n_head, hd).transpose(0, 2, 1, 3)  # (B, nh, T, hd)

        causal = True
        if cache is not None:
            # Generation: append this step's keys/values to those of earlier positions.
            start = cache.length
            if start:
                k = mx.concatenate([cache.k[layer], k], axis=2)  # (B, nh, start+T, hd)
                v = mx.concatenate([cache.v[layer], v], axis=2)
            cache.k[layer], cache.v[layer] = k, v
            # A single new token may look at every cached position; a prompt (start 0) is causal.
            assert start == 0 or T == 1, "the cache takes a prompt, then one token at a time"
            causal = start == 0

        # softmax(q k^T / sqrt(hd)) v, where position t sees positions <= t only.
        scale = 1.0 / math.sqrt(hd)
        if self.training and self.dropout > 0:
            # The fused kernel has no dropout: spell attention out to drop attention weights.
            att = (q * scale) @ k.transpose(0, 1, 3, 2)  # (B, nh, T, T)
            mask = mx.tril(mx.ones((T, T), dtype=mx.bool_))
            att = mx.softmax(mx.where(mask, att, -math.inf), axis=-1)
            y = self.attn_dropout(att) @ v  # (B, nh, T, hd)
        else:
            mask = "causal" if causal else None
            y = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
        y = y.transpose(0, 2, 1, 3).reshape(B, T, C)  # heads side by side again: (B, T, C)
        return self.proj_dropout(self.c_proj(y))  # (B, T, C)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)  # widen 4x
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)  # back to C
        self.dropout = nn.Dropout(cfg.dropout)

    def __call__(self, x: mx.array) -> mx.array:
        # nn.gelu is the exact (erf) GELU, as torch's F.gelu; not the tanh approximation.
        return self.dropout(self.c_proj(nn.gelu(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: normalise, transform, add back to the residual stream."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def __call__(self, x: mx.array, cache: KVCache | None = None, layer: int = 0) -> mx.array:
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
        self.blocks = [Block(cfg) for _ in range(cfg.n_layer)]
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        # No separate output head: the logits reuse wte's weight (weight tying, as in GPT-2).
        self._init_weights()

    def _init_weights(self) -> None:
        # As in gpt.py: Linear and Embedding weights ~ N(0, 0.02), biases 0, LayerNorm gains 1
        # (MLX's own default). GPT-2 scales the projections into the residual stream by
        # 1/sqrt(2 * n_layer), so the stream's variance does not grow with depth.
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        new = []
        for name, p in tree_flatten(self.parameters()):
            if ".ln_" in f".{name}":
                continue  # LayerNorm weight 1, bias 0
            if name.endswith(".bias"):
                new.append((name, mx.zeros_like(p)))
            else:
                std = residual_std if name.endswith("c_proj.weight") else 0.02
                new.append((name, mx.random.normal(p.shape) * std))
        self.load_weights(new, strict=False)

    def __call__(
        self, idx: mx.array, targets: mx.array | None = None, cache: KVCache | None = None
    ) -> tuple[mx.array, mx.array | None]:
        """Logits (B, T, V) and, with targets, the mean cross-entropy; a target of -1 is ignored.

        With a cache, idx holds only the new positions and their logits come back.
        """
        x = self.hidden_states(idx, cache)  # (B, T, C)
        logits = self.head(x)  # (B, T, V): a score for every next token
        if targets is None:
            return logits, None
        return logits, cross_entropy(logits, targets)

    def hidden_states(self, idx: mx.array, cache: KVCache | None = None) -> mx.array:
        """The final LayerNorm's output (B, T, C): what the head reads."""
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        assert start + T <= self.config.block_size, "context longer than block_size"
        pos = mx.arange(start, start + T)  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C) + (T, C) -> (B, T, C)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)  # (B, T, C)
        if cache is not None:
            cache.length += T
        return self.ln_f(x)  # (B, T, C)

    def head(self, x: mx.array) -> mx.array:
        """The logits x @ wte^T, (..., C) -> (..., V): the token embedding read backwards."""
        return x @ self.wte.weight.T


def cross_entropy(logits: mx.array, targets: mx.array) -> mx.array:
    """Mean of -log softmax(logits)[target] over the positions whose target is not -1."""
    counted = targets != -1  # (B, T)
    safe = mx.where(counted, targets, 0)  # any valid index where ignored; masked out below
    logits = logits.astype(mx.float32)
    picked = mx.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]  # (B, T)
    losses = mx.logsumexp(logits, axis=-1) - picked  # (B, T)
    return mx.where(counted, losses, 0.0).sum() / counted.sum()
