"""Text to tokens to batches.

    tokenizer.py  the GPT-2 BPE (tiktoken's r50k_base), and UTF-8-safe streaming decode
    corpus.py     the corpus a run reads (a text file's token cache, or a prepared dataset's
                  shards), split 90/10, and the batches and eval windows served from it
    prepare.py    `lal prepare`: a text file, a folder or a JSONL tokenised into a dataset

May import: lal_core.errors only.
"""
