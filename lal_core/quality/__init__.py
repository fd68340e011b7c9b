"""Is the model any good? Its loss on held-out text, and figures on its samples, computed over
BPE tokens.

    scoring      `lal eval`: a checkpoint's loss and perplexity on its run's val split or a text
    metrics      distinct-n, repeated 4-grams and the loop detector: one sample at a time
    verbatim     memorisation: a sample's n-grams found verbatim in the training tokens
    report       `lal report`: samples of checkpoints side by side with held-out text
    report_file  the report as data: typed, saved as report.json, shown as text; no framework

May import: errors, model, data, backends, runs, generation, training (its evals), sft (the
chat format).
"""
