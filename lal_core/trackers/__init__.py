"""A run in the experiment trackers people already use: TensorBoard and Weights & Biases.

    send.py          a run's log, as typed events, to one tracker: the config and recipe, every
                     step and eval, the samples and their writing figures, the best and
                     early-stop iterations, how it ended; live (following the run as it goes,
                     in a process of its own) or after the fact, by the same code
    tensorboard.py   TensorBoard's event files, in the run folder (tracking/tensorboard/JOB)
    wandb.py         a W&B run (offline where no account is set up: `wandb sync` sends it later)

The run folder stays the source of truth: a tracker only reads it, and writes nothing but its
own files under the run's `tracking/` folder. Each tracker is an optional extra
(`uv sync --extra tensorboard --extra wandb`). This package imports runs/ and errors, nothing
that trains.
"""

TRACKERS = ("tensorboard", "wandb")
