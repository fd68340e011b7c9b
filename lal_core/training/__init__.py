"""Training: a run from its set-up to its last checkpoint.

    train.py    the one file to read: `Trainer` sets a run up (new or resumed), `run_steps` is
                the step loop pre-training and fine-tuning share, `Pretraining` the recipe's
                evals, early stopping and checkpoints
    request.py  what a run is asked to be (`RunRequest`), what it became (`RunResult`), where
                it stands between sessions (`LoopState`), and what a resume checks first
    evals.py    the mean loss over fixed windows: training's evals, `lal eval`, the report;
                and bits per byte
    samples.py  the samples drawn after every eval (fine-tuning: at each epoch's end),
                streamed into the run's log with their writing figures

May import: errors, model, data, backends, runs, generation, writing.
"""
