"""lal_core: the engine. Train, checkpoint, sample and fine-tune a small GPT.

The public API (what the CLI and the dashboard use):

    get_model_config, TrainConfig, train / Trainer, StopRequest, the events,
    load_corpus, list_runs / find_run / resolve_checkpoint, load_for_sampling, stream.
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
from lal_core.events import (
    CheckpointSaved,
    EarlyStopped,
    EvalDone,
    Event,
    Preparing,
    RunFailed,
    RunFinished,
    RunStarted,
    SFTEpochDone,
    StepDone,
    StopRequest,
)

__all__ = [
    "MODEL_CONFIGS",
    "CheckpointSaved",
    "EarlyStopped",
    "EvalDone",
    "Event",
    "LalError",
    "ModelConfig",
    "Preparing",
    "RunFailed",
    "RunFinished",
    "RunStarted",
    "SFTEpochDone",
    "StepDone",
    "StopRequest",
    "TrainConfig",
    "count_parameters",
    "estimate_training_memory",
    "get_model_config",
]
