"""The MLX backend: the GPT of `lal_core.model.gpt_mlx` on the Apple GPU (macOS) or the CPU
(Linux wheels), the twin of `backends/torch` behind the same interface.

    backend.py  MLXBackend: training steps, evals, checkpoints' arrays, sampling

May import: errors, model, backends.base and backends.distributed; mlx.
"""
