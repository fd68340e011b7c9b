"""`lal prepare`: a text file, a folder of them or a JSONL of documents, tokenised once into a
dataset that `lal train --data NAME` reads (`lal_core.data.corpus`)."""

from __future__ import annotations

import argparse


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "prepare", help="tokenise a text file, a folder or a .jsonl(.gz) into a dataset"
    )
    p.add_argument(
        "source",
        metavar="PATH",
        help="a UTF-8 text file, a folder of them (recursively) or a .jsonl / .jsonl.gz with a "
        "`text` field per line",
    )
    p.add_argument(
        "--name",
        default=None,
        help="the dataset's name: data/datasets/NAME (default: the source's name)",
    )
    p.set_defaults(handler=cmd_prepare)


def cmd_prepare(args: argparse.Namespace) -> int:
    from lal_core.data.prepare import prepare

    dataset = prepare(args.source, args.name)
    index = dataset.index
    shards = len(index["shards"])
    print(
        f"dataset {dataset.folder.name}: {index['tokens']:,} tokens from {index['documents']:,} "
        f"documents in {shards} shard{'s' if shards != 1 else ''}, in {dataset.folder}; "
        f"train on it with: lal train --data {dataset.folder.name}"
    )
    return 0
