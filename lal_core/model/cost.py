"""What a training step of a config costs: FLOPs per token (for MFU) and memory.

Training costs about 6 FLOPs per parameter per token (2 forward, 4 backward), plus attention's
score and weighted-sum matmuls, which have no parameters (PaLM, appendix B):

    flops_per_token = 6 * N + 12 * n_layer * n_embd * block_size

N counts the weights that take part in matmuls: every parameter except the position embedding
(a lookup); the tied token embedding counts once, for the output head. MFU is
tokens/s * flops_per_token / peak FLOP/s, against a peak the user can set (--peak-tflops) or a
default for the device (the backend's `peak_flops`).

The memory estimate models the engine's CPU defaults (the chunked loss, recomputed activations
past a size), so the sizes those defaults use are set here, beside it.
"""

from __future__ import annotations

from lal_core.model.config import ModelConfig, count_parameters


def flops_per_token(cfg: ModelConfig) -> int:
    """Training FLOPs per token: 6 * N plus the attention term (PaLM-style)."""
    n = count_parameters(cfg) - cfg.block_size * cfg.n_embd  # the position lookup is no matmul
    return 6 * n + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size


def mfu(tokens_per_sec: float, cfg: ModelConfig, peak_flops: float | None) -> float | None:
    """Model-FLOPs utilisation in [0, 1] (None without a peak)."""
    if not peak_flops or tokens_per_sec <= 0:
        return None
    return tokens_per_sec * flops_per_token(cfg) / peak_flops


def saved_activation_bytes(cfg: ModelConfig, batch_size: int) -> int:
    """Rough float32 bytes the blocks keep for backward: about 16 floats per position per
    channel per layer (LayerNorm inputs and outputs, Q/K/V, attention output, the MLP's 4C
    hidden before and after GELU), counted with saved-tensor hooks on lal's config."""
    return 4 * cfg.n_layer * batch_size * cfg.block_size * cfg.n_embd * 16


def attention_weight_bytes(cfg: ModelConfig, batch_size: int) -> int:
    """Bytes of attention weights the blocks keep for backward with dropout on: each layer's
    softmax, dropout mask and dropped weights, (B, nh, T, T) float32 each, as attention with
    dropout runs unfused (counted with saved-tensor hooks). Without dropout the fused kernel
    keeps none of them. Medium at batch 16 keeps 3.2 GB of them, more than its (B, T, C)
    activations. (Training in bf16 on a CPU, `cpu_dropout`'s attention keeps them in bf16:
    half this. The estimate stays float32's.)"""
    if cfg.dropout == 0:
        return 0
    return 12 * cfg.n_layer * batch_size * cfg.n_head * cfg.block_size**2


# Rows of the chunked loss at a time (lal_core/backends/torch/chunked_loss.py): 512 x 50,257
# values is a 103 MB buffer in float32 (51 MB in bf16), reused every chunk and every step. 256
# and 1,024 rows trained tiny and small no faster (bf16, AMX Xeon; bench/README.md).
LOSS_CHUNK_ROWS = 512
# Without gradients (an eval) a chunk needs only its loss, and fewer rows keep more of it in
# the CPU's caches: 128 rows took tiny's eval loss 10-30% less time than 64 or 512 (bf16 and
# float32, AMX Xeon; bench/README.md).
EVAL_LOSS_CHUNK_ROWS = 128

# Above this, training recomputes each block's activations in backward instead of keeping
# them (off CUDA; see `lal_core.backends.torch.precision.default_recompute`).
RECOMPUTE_ABOVE_BYTES = 4 * 2**30


def activations_need_recompute(cfg: ModelConfig, batch_size: int) -> bool:
    """Whether the blocks' (B, T, C) activations would take more than RECOMPUTE_ABOVE_BYTES:
    where the engine recomputes them in backward instead (off CUDA), and what the memory
    estimate assumes. The attention weights dropout keeps are not counted here: with them,
    medium at batch 16 would recompute, 1.47x slower for 4 GB less (bf16, AMX Xeon: 6.7 s a
    step at 7.9 GB peak against 9.8 s at 3.9 GB)."""
    return saved_activation_bytes(cfg, batch_size) > RECOMPUTE_ABOVE_BYTES


def estimate_training_memory(cfg: ModelConfig, batch_size: int) -> int:
    """Rough peak bytes for training with the engine's CPU defaults, in float32, for
    `batch_size` sequences per forward pass (the micro batch, where gradients accumulate):
    - 20 bytes a parameter: weights, gradients, AdamW's two moments, the update's temporaries;
    - the activations the blocks keep for backward (attention weights with dropout
      included), or, past RECOMPUTE_ABOVE_BYTES, each block's input and one block's worth;
      and two blocks' worth while backward runs;
    - the chunked loss: a 512-row logits buffer, the head transposed, its gradient and the
      rows' gradients;
    - about 0.75 GB of runtime (torch itself, the corpus).
    It is an estimate, not a promise (checked against bench/run.py: bench/README.md).
    """
    C, V = cfg.n_embd, cfg.vocab_size
    tokens = batch_size * cfg.block_size
    kept = saved_activation_bytes(cfg, batch_size)
    one_block = kept // cfg.n_layer
    attention = attention_weight_bytes(cfg, batch_size)
    if activations_need_recompute(cfg, batch_size):
        kept = 4 * cfg.n_layer * tokens * C + one_block + attention // cfg.n_layer
    else:
        kept += attention
    loss = 4 * (LOSS_CHUNK_ROWS * V + 2 * V * C + tokens * C)
    return 20 * count_parameters(cfg) + kept + 2 * one_block + loss + 750_000_000
