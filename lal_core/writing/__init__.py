"""How a model writes, in figures: computed over the BPE tokens of its samples, the same way
for a run's evals, `lal report` and the dashboard's Sample pane.

    repetition  distinct-n, repeated 4-grams and the loop detector: one sample at a time
    verbatim    memorisation: a sample's n-grams found verbatim in the training tokens
    figures     all of them over a set of samples (`runs.records.Figures`)
    prompts     prompts from the val split, and the held-out text that follows them

May import: errors, data, runs (its records).
"""
