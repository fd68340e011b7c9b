"""Training: a run from its set-up to its last checkpoint.

    train.py    the one file to read: `Trainer` sets a run up (new or resumed), `run_steps` is
                the step loop pre-training and fine-tuning share, `Pretraining` the recipe's
                evals, early stopping and checkpoints
    request.py  what a run is asked to be (`RunRequest`), what it became (`RunResult`), where
                it stands between sessions (`LoopState`), and what a resume checks first
    evals.py    the mean loss over fixed windows: training's evals, `lal eval`, the report

May import: errors, model, data, backends, runs.
"""
