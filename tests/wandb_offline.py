"""Reading a W&B offline run file (`run-ID.wandb`) in tests, with W&B's own record schema.

The file is W&B's transaction log: a 7-byte header (":W&B", 0xBEE1, version 0), then LevelDB's
log format, 32 KiB blocks of chunks (crc32 4 bytes, length 2, type 1: full, first, middle or
last), each whole record a serialised `wandb_internal_pb2.Record`. wandb 0.31 writes it from its
Go core and ships no Python reader, so this is the few lines it takes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HEADER, BLOCK, CHUNK_HEAD = 7, 32 * 1024, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pieces = HEADER, b""
    while pos + CHUNK_HEAD <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK_HEAD:  # the block's tail is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEAD])
        chunk = data[pos + CHUNK_HEAD : pos + CHUNK_HEAD + length]
        pos += CHUNK_HEAD + length
        if kind == 0 and length == 0:
            continue
        pieces = chunk if kind in (FULL, FIRST) else pieces + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            yield record


def _key(item: Any) -> str:
    """An item's key: `key`, or its `nested_key` path joined by "." (how wandb-core writes it)."""
    return item.key or ".".join(item.nested_key)


def offline_run(folder: Path) -> dict[str, Any]:
    """A run's config, history rows (by step) and summary, as the offline file holds them."""
    (path,) = Path(folder).glob("run-*.wandb")
    config: dict[str, Any] = {}
    history: dict[int, dict[str, Any]] = {}
    summary: dict[str, Any] = {}
    exit_code = None
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            for item in record.run.config.update:
                config[_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                config[_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            row = {_key(item): json.loads(item.value_json) for item in record.history.item}
            step = record.history.step.num if record.history.HasField("step") else row["_step"]
            history.setdefault(step, {}).update(row)
        elif kind == "summary":
            for item in record.summary.update:
                summary[_key(item)] = json.loads(item.value_json)
        elif kind == "exit":
            exit_code = record.exit.exit_code
    return {"config": config, "history": history, "summary": summary, "exit_code": exit_code}
