"""lal_core: the engine. Train, checkpoint, sample and fine-tune a small GPT.

Its packages, from the ground up (each may import those above it in this list, never one below;
its own __init__ says what it holds):

    errors       LalError and its kinds: every user-facing problem, in one line
    model/       what is trained: the GPT (PyTorch, the lesson; MLX, its twin), its configs, the
                 training recipe and what a step costs (FLOPs, memory)
    data/        text to tokens to batches: the tokenizer, the corpus, prepared datasets
    backends/    what differs per framework: PyTorch (torch/) and MLX (mlx/), one interface
    runs/        a run folder and everything in it: run.json and metrics.jsonl typed, the
                 events, the checkpoints, the one-writer lock, following a run as it grows
    generation/  sampling: many samples of a prompt at once, streamed, and the controls
    training/    a run from its set-up to its last checkpoint: the one training loop
    sft/         fine-tuning into a (very small) chat model, and chatting with it
    quality/     is it any good: `lal eval`'s loss, `lal report`'s figures on samples
    export/      what users take away: a Hugging Face folder, a GGUF file, loss curves as
                 pictures and CSV
    trackers/    a run in TensorBoard and Weights & Biases (reads runs/ alone)
    cli/         the headless command line, `lal`

The dashboard (`lal_tui`) uses these packages' API; nothing here imports it. docs/architecture.md
draws the house and follows one training step through it.
"""

from lal_core.errors import LalError
from lal_core.model.config import MODEL_CONFIGS, ModelConfig, count_parameters, get_model_config
from lal_core.model.cost import estimate_training_memory
from lal_core.model.recipe import TrainConfig

__all__ = [
    "MODEL_CONFIGS",
    "LalError",
    "ModelConfig",
    "TrainConfig",
    "count_parameters",
    "estimate_training_memory",
    "get_model_config",
]
