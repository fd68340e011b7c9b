"""Is the model any good? Figures on samples, computed over BPE tokens.

metrics   distinct-n, repeated 4-grams and the loop detector: one sample at a time
verbatim  memorisation: a sample's n-grams found verbatim in the training tokens (suffix array)
report    `lal report`: samples of checkpoints side by side with held-out text, saved in the run
report_file  the saved report (report.json), typed: read without importing a framework
"""
