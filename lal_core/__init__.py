"""lal_core: the engine. Train, checkpoint, sample and fine-tune a small GPT.

Where things are (the command line, `lal_core.cli`, and the dashboard, `lal_tui`, use these):

    config       ModelConfig, TrainConfig, MODEL_CONFIGS, get_model_config
    flags        the run flags, defined once for `lal train` and `lal-tui`
    trainer      Trainer / train: a pre-training run; pretraining: its part of the loop
    loop         the one step loop, for pre-training and fine-tuning
    events       the typed progress events and StopRequest
    records      run.json and metrics.jsonl, typed; runs: run folders, list_runs, find_run
    checkpoint   safetensors weights and resumable state, written atomically
    sampling     load_for_sampling, Generation (many samples at once), stream, generate_ids;
                 controls: the sampling controls; sft: fine-tuning and chat
    evaluation   `lal eval`; quality: `lal report` (sample figures, memorisation, the report)
    model        the GPT, as a lesson; backends: what differs per framework
"""

from lal_core.config import (
    MODEL_CONFIGS,
    ModelConfig,
    TrainConfig,
    count_parameters,
    estimate_training_memory,
    get_model_config,
)
from lal_core.errors import LalError

__all__ = [
    "MODEL_CONFIGS",
    "LalError",
    "ModelConfig",
    "TrainConfig",
    "count_parameters",
    "estimate_training_memory",
    "get_model_config",
]
