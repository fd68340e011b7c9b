"""The PyTorch backend: the GPT of `lal_core.model.gpt` on CUDA, MPS or the CPU, and what
makes it fast there. Each fast path computes what the model computes; tests/test_fast_paths.py
checks each against it.

    backend.py        TorchBackend: training steps, evals, checkpoints' arrays, sampling
    training_loss.py  the training loss: chunked, with recomputed activations where it pays
    chunked_loss.py   the head and cross-entropy a few rows at a time, one fused softmax
    sampler.py        sampling: 16-bit and int8 copies, the KV cache, the candidates
    int8_head.py      an int8 copy of the output head for sampling on a CPU
    precision.py      which fast path on which device: the measured defaults
    device.py         the device, and its peak FLOP/s for MFU
    cpu_threads.py    how many threads sampling takes on a busy CPU
    cpu_memory.py     freed memory kept for the next training step (glibc)

May import: errors, model, backends.base and backends.distributed; torch.
"""
