"""A run is a folder and at most one process writing it; everything else reads the folder.

    checkpoints/<run-id>/
        run.json           what the run is and where it stands  (records.RunRecord)
        metrics.jsonl      every event of its training, a line each  (events)
        sft_metrics.jsonl  ... of its fine-tuning
        best / final / sft.safetensors, state.safetensors  (checkpoints)
        .lock, stop.request, train.log, report.json

    folder.py       RunDir: one run's folder and its files; listing and finding runs
    records.py      run.json and the metrics lines, typed: one writer and one reader each
    events.py       the typed events a run emits, their log on disk, and the stop request
    follow.py       following a run as it grows: its events, past and live
    checkpoints.py  weights and resumable state in safetensors, no pickle anywhere
    lock.py         the one-writer lock, which the OS drops when its process dies; who
                    writes a folder now, and the live status a run has for it
    files.py        files written whole or not at all

May import: errors, model (its configs and recipe). No framework.
"""
