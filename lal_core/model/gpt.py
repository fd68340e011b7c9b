"""The GPT, in PyTorch: a decoder-only transformer in the GPT-2 style.

Read it top to bottom. Shapes use B = batch, T = time (positions), C = channels (n_embd),
nh = heads, hd = head size (C // nh), V = vocabulary size.

    tokens (B, T)
      -> token embedding + position embedding            (B, T, C)
      -> n_layer x Block: x + attn(ln_1(x)), x + mlp(ln_2(x))
      -> final LayerNorm
      -> logits = x @ token_embedding^T  (weight tying)   (B, T, V)

This file is the model as a lesson: one plain `forward`. What makes it fast lives beside it,
in the backend (`lal_core/backends/`): a loss computed a few rows at a time, recomputed
activations, 16-bit and int8 copies for sampling. Each computes what this file computes.

The MLX twin of this file is `lal_core/model/gpt_mlx.py`: same names, same shapes.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from lal_core.model.config import ModelConfig


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
        self.dropout = cfg.dropout  # on the attention weights, while training
        self.proj_dropout = nn.Dropout(cfg.dropout if cfg.attn_proj_dropout else 0.0)

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
        return self.proj_dropout(self.c_proj(y))  # (B, T, C)


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
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V) and, with targets, the mean cross-entropy; a target of -1 is ignored.

        With a cache, idx holds only the new positions and their logits come back.
        """
        x = self.hidden_states(idx, cache)  # (B, T, C)
        logits = self.head(x)  # (B, T, V): a score for every next token
        if targets is None:
            return logits, None
        # float32 for the softmax's accuracy, whatever the logits' type
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-1)
        return logits, loss

    def hidden_states(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """The final LayerNorm's output (B, T, C): what the head reads."""
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        assert start + T <= self.config.block_size, "context longer than block_size"
        pos = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C) + (T, C) -> (B, T, C)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)  # (B, T, C)
        if cache is not None:
            cache.length += T
        return self.ln_f(x)  # (B, T, C)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """The logits x @ wte^T, (..., C) -> (..., V): the token embedding read backwards."""
        return F.linear(x, self.wte.weight)
