"""Tokenised datasets, for corpora of gigabytes: `lal prepare` writes them
(`lal_core.preparing`), `lal_core.data` reads them through here like a text file's token cache.

    data/datasets/NAME/
        index.json          the shards (file, tokens, sha256), the sources, the token count
        shard-00000.bin     uint16 tokens; documents joined by <|endoftext|> (50256)
        ...

A dataset's identity, what run.json records and a resume checks, is the sha256 of its
index.json. The val split is the last 10% of its tokens, as for a text file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lal_core import paths
from lal_core.errors import DataError

INDEX = "index.json"


def datasets_dir() -> Path:
    return paths.data_dir() / "datasets"


def find_dataset(ref: str | os.PathLike) -> Path | None:
    """The dataset folder `ref` names: a folder holding index.json, or the name of one under
    data/datasets/. None: `ref` is no dataset (a text file, or nothing)."""
    path = Path(ref)
    if (path / INDEX).is_file():
        return path
    if path.name == str(ref) and (datasets_dir() / path.name / INDEX).is_file():
        return datasets_dir() / path.name
    return None


# -- reading ----------------------------------------------------------------------------------
class TokenSpan:
    """Tokens [start, stop) of a sequence of shards, read through their memory maps: `len()`,
    `span[a:b]` (an array: a view within one shard, a copy across two) and `np.asarray(span)`
    (all of it, copied). What `lal_core.data` serves batches and evals from."""

    def __init__(self, shards: list[np.ndarray], start: int = 0, stop: int | None = None) -> None:
        self.shards = shards
        self.offsets = np.cumsum([0] + [len(s) for s in shards])  # where each shard begins
        self.start = start
        self.stop = int(self.offsets[-1]) if stop is None else stop

    def __len__(self) -> int:
        return self.stop - self.start

    def span(self, start: int, stop: int) -> TokenSpan:
        return TokenSpan(self.shards, self.start + start, self.start + stop)

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("a TokenSpan is read in contiguous slices")
        a, b, _ = key.indices(len(self))
        a, b = self.start + a, self.start + max(a, b)
        first = int(np.searchsorted(self.offsets, a, side="right")) - 1
        parts = []
        while a < b:
            shard, base = self.shards[first], int(self.offsets[first])
            end = min(b, base + len(shard))
            parts.append(shard[a - base : end - base])
            a, first = end, first + 1
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out.astype(dtype) if dtype is not None else np.array(out)


@dataclass(frozen=True)
class Dataset:
    folder: Path
    sha256: str  # of index.json: the dataset's identity
    tokens: TokenSpan
    index: dict


def open_dataset(folder: Path) -> Dataset:
    """A prepared dataset, its shards memory-mapped (sizes checked against the index; a
    shard's sha256 is checked by `lal prepare`, not on every open)."""
    raw = (folder / INDEX).read_bytes()
    try:
        index = json.loads(raw)
        shards = [(folder / s["file"], int(s["tokens"])) for s in index["shards"]]
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{folder / INDEX} is not a dataset index; prepare it again") from None
    maps = []
    for path, count in shards:
        if not path.is_file() or path.stat().st_size != 2 * count:
            raise DataError(f"dataset shard {path} is missing or cut short; prepare it again")
        maps.append(np.memmap(path, dtype=np.uint16, mode="r") if count else np.zeros(0, "u2"))
    return Dataset(folder, hashlib.sha256(raw).hexdigest(), TokenSpan(maps), index)


# -- the sources --------------------------------------------------------------------------------
