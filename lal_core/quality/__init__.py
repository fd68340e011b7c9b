"""Is the model any good? Its loss on held-out text, and figures on its samples, computed over
BPE tokens.

    scoring      `lal eval`: a checkpoint's loss and perplexity on its run's val split or a text
    report       `lal report`: samples of checkpoints side by side with held-out text
    report_file  the report as data: typed, saved as report.json, shown as text; no framework

The figures themselves are `lal_core.writing`'s, shared with a run's eval samples.

May import: errors, model, data, backends, runs, generation, training (its evals), writing, sft
(the chat format).
"""
