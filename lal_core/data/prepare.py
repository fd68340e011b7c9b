"""`lal prepare`: a text file, a folder of them or a JSONL of documents tokenised into a
dataset (`lal_core.data.corpus` has its layout and reads it).

A source is a UTF-8 text file (one document), a folder of them (recursively, in sorted path
order, hidden files left out), or a `.jsonl` / `.jsonl.gz` file with a `text` field per line
(one document a line).

Preparing streams: the main process splits each source into pieces of about 4 MB (a text file's
byte ranges, cut where the GPT-2 pre-tokeniser would cut anyway, so the tokens are those of
encoding each document whole; a JSONL file's runs of whole lines) and a worker process a core
reads, decodes and tokenises each, a bounded number at a time; the main process writes their
tokens to the shards in order. Everything goes to a hidden folder beside the dataset, renamed
into place at the end: an error (a file that is not UTF-8 text, a JSON line without `text`) or
Ctrl-C removes it, so no half-written shard is ever read, and running the command again starts
over.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lal_core.data.corpus import INDEX, Dataset, datasets_dir, open_dataset
from lal_core.data.tokenizer import ENCODING_NAME, EOT_TOKEN, encode_array, get_tokenizer
from lal_core.errors import DataError

SHARD_TOKENS = 1 << 27  # 128M tokens, 256 MB a shard
PIECE_BYTES = 1 << 22  # text is read and encoded about 4 MB at a time


def _is_jsonl(path: Path) -> bool:
    return path.name.endswith((".jsonl", ".jsonl.gz"))


def source_files(source: Path) -> list[Path]:
    """The files a source holds, in the order their documents are taken."""
    if not source.exists():
        raise DataError(f"{source} does not exist; give a text file, a folder or a .jsonl")
    if source.is_file():
        return [source]
    files = sorted(
        p
        for p in source.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(source).parts)
    )
    if not files:
        raise DataError(f"{source} holds no files; give a folder of UTF-8 text files")
    return files


@dataclass(frozen=True)
class Piece:
    """A piece of a source for a worker to tokenise: bytes [start, end) of a text file, or raw
    JSONL lines (first_line: the number of the first). Its tokens come back with the number
    of documents they hold (pieces of one text file: the file's first piece counts it)."""

    path: Path
    start: int = 0
    end: int = 0
    lines: bytes | None = None  # JSONL: whole lines, already decompressed
    first_line: int = 0
    documents: int = 0  # documents that begin in this piece (text: 1 for a file's first)

    @property
    def size(self) -> int:
        return len(self.lines) if self.lines is not None else self.end - self.start


_ASCII_SPACE = b" \t\n\r\x0b\x0c"


def _safe_byte_cut(data: bytes, i: int) -> bool:
    """`data.safe_cut` on bytes, a little stricter: a newline between two ASCII non-spaces (a
    byte of a multibyte character could be part of a Unicode space)."""
    before, after = data[i - 2], data[i]
    return (
        data[i - 1] == 10
        and before < 128
        and after < 128
        and before not in _ASCII_SPACE
        and after not in _ASCII_SPACE
    )


def _text_pieces(path: Path) -> Iterator[Piece]:
    """A text file as pieces of about PIECE_BYTES, each ending at a safe cut (found by reading a
    little past each boundary: the text itself is read by the workers)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if b"\x00" in f.read(8192):
            raise DataError(f"{path} looks binary, not UTF-8 text; take it out of the source")
        start, first = 0, True
        while start < size:
            end = _next_cut(f, start + PIECE_BYTES, size)
            yield Piece(path, start, end, documents=int(first))
            start, first = end, False


def _next_cut(f, at: int, size: int) -> int:
    """The first safe cut at or after `at` (the end of the file if there is none)."""
    window = 1 << 16
    while at < size:
        f.seek(at - 2)
        data = f.read(window + 2)
        for i in range(2, len(data)):
            if _safe_byte_cut(data, i):
                return at - 2 + i
        at += window
    return size


def _jsonl_pieces(path: Path) -> Iterator[Piece]:
    """A JSONL file (gzip-compressed or not) as runs of whole lines of about PIECE_BYTES."""
    opener = gzip.open if path.suffix == ".gz" else open
    carry, line = b"", 1
    try:
        with opener(path, "rb") as f:
            while True:
                data = f.read(PIECE_BYTES)
                buffer = carry + data
                cut = buffer.rfind(b"\n") + 1 if data else len(buffer)
                if cut:
                    lines = buffer[:cut]
                    yield Piece(path, lines=lines, first_line=line)
                    line += lines.count(b"\n")
                carry = buffer[cut:]
                if not data:
                    return
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{path} is not a whole gzip file ({exc})") from None


def _pieces(files: list[Path]) -> Iterator[Piece]:
    for path in files:
        yield from (_jsonl_pieces if _is_jsonl(path) else _text_pieces)(path)


def tokenise_piece(piece: Piece) -> tuple[np.ndarray, int]:
    """A piece's tokens (uint16; JSONL documents joined by EOT_TOKEN) and the documents in them.
    Run by a worker process: the text is made and unmade there, not under the main process's
    GIL."""
    if piece.lines is None:
        with open(piece.path, "rb") as f:
            f.seek(piece.start)
            raw = f.read(piece.end - piece.start)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{piece.path} is not UTF-8 text (byte {piece.start + exc.start}); convert it or "
                "take it out of the source"
            ) from None
        tokens = encode_array(text)
        return tokens, piece.documents if len(tokens) else 0
    parts: list[np.ndarray] = []
    for number, line in enumerate(piece.lines.split(b"\n"), piece.first_line):
        if not line.strip():
            continue
        try:
            text = json.loads(line)["text"]
            if not isinstance(text, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise DataError(
                f"{piece.path} line {number} has no `text` string; each line must be a JSON "
                'object like {"text": "..."}'
            ) from None
        if text:
            if parts:
                parts.append(np.array([EOT_TOKEN], dtype=np.uint16))
            parts.append(encode_array(text))
    documents = (len(parts) + 1) // 2
    return (np.concatenate(parts) if parts else np.zeros(0, "u2")), documents


# -- writing ------------------------------------------------------------------------------------
class _ShardWriter:
    """Tokens appended in order, cut into shards of `shard_tokens`, each hashed as written."""

    def __init__(self, folder: Path, shard_tokens: int) -> None:
        self.folder, self.limit = folder, shard_tokens
        self.shards: list[dict] = []
        self.total = 0
        self._file = None
        self._hash = hashlib.sha256()
        self._count = 0

    def write(self, tokens: np.ndarray) -> None:
        while len(tokens):
            if self._file is None:
                name = f"shard-{len(self.shards):05d}.bin"
                self._file = open(self.folder / name, "wb")  # noqa: SIM115 - closed in _close
                self._name = name
            room = self.limit - self._count
            part, tokens = tokens[:room], tokens[room:]
            data = part.astype(np.uint16).tobytes()
            self._file.write(data)
            self._hash.update(data)
            self._count += len(part)
            self.total += len(part)
            if self._count == self.limit:
                self._close()

    def _close(self) -> None:
        if self._file is None:
            return
        self._file.close()
        self.shards.append(
            {"file": self._name, "tokens": self._count, "sha256": self._hash.hexdigest()}
        )
        self._file, self._hash, self._count = None, hashlib.sha256(), 0

    def finish(self) -> list[dict]:
        self._close()
        return self.shards


def prepare(
    source: str | os.PathLike,
    name: str | None = None,
    shard_tokens: int = SHARD_TOKENS,
    workers: int | None = None,
    show_progress: bool | None = None,
) -> Dataset:
    """Tokenise `source` into data/datasets/NAME (default name: the source's own, without
    suffixes), or refuse in one line with nothing written."""
    source = Path(source)
    name = name or source.name.split(".")[0] or "dataset"
    if Path(name).name != name or name in (".", ".."):
        raise DataError(f"--name must be a plain folder name, got {name!r}")
    final = datasets_dir() / name
    if final.exists():
        raise DataError(f"dataset {name} already exists ({final}); give another --name")
    files = source_files(source)
    # The bar counts text bytes: a compressed file's are not known before it is read.
    compressed = any(p.suffix == ".gz" for p in files)
    total_bytes = None if compressed else sum(p.stat().st_size for p in files)
    partial = datasets_dir() / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)  # what an earlier, interrupted prepare left
    partial.mkdir(parents=True)
    workers = workers or os.cpu_count() or 1
    show = sys.stderr.isatty() if show_progress is None else show_progress
    try:
        with _Progress(total_bytes, show) as progress:
            writer = _ShardWriter(partial, shard_tokens)
            documents = _encode(files, workers, progress, writer)
            shards = writer.finish()
        index = {
            "format_version": 1,
            "encoding": ENCODING_NAME,
            "separator": EOT_TOKEN,
            "tokens": writer.total,
            "documents": documents,
            "sources": [str(p.resolve()) for p in files],
            "shards": shards,
        }
        if writer.total == 0:
            raise DataError(f"{source} holds no text; give files with some text in them")
        (partial / INDEX).write_text(json.dumps(index, indent=1) + "\n")
        os.replace(partial, final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return open_dataset(final)


def _quiet_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def _encode(files: list[Path], workers: int, progress, writer: _ShardWriter) -> int:
    """Every document's tokens to `writer`, joined by EOT_TOKEN; the number of documents.
    Pieces are tokenised by `workers` processes (one: here), a bounded number at a time, and
    written in order. Processes, not threads: making tiktoken's lists of ints holds the GIL."""
    pending: deque[tuple[Piece, Future]] = deque()
    documents = 0
    eot = np.array([EOT_TOKEN], dtype=np.uint16)

    def drain(keep: int) -> None:
        nonlocal documents
        while len(pending) > keep:
            piece, future = pending.popleft()
            tokens, count = future.result()  # count: documents beginning in this piece
            if count and documents:
                writer.write(eot)
            writer.write(tokens)
            documents += count
            progress(piece.size, len(tokens))

    with contextlib.ExitStack() as stack:
        if workers > 1:
            get_tokenizer()  # a missing tokenizer is said here, once
            # fork where it is safe (Linux: the workers only tokenise), so they need not import
            # the caller's __main__ again; the platform's default elsewhere.
            context = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
            pool = ProcessPoolExecutor(workers, context, initializer=_quiet_worker)
            stack.callback(pool.shutdown, cancel_futures=True)
            submit = functools.partial(pool.submit, tokenise_piece)
        else:
            submit = lambda piece: _done(tokenise_piece(piece))  # noqa: E731
        for piece in _pieces(files):
            pending.append((piece, submit(piece)))
            drain(2 * workers)  # bounded: a few pieces in flight
        drain(0)
    return documents


class _Progress:
    """A progress bar on stderr (MB read, MB/s, tokens/s, time left), when it is a terminal;
    called as progress(bytes read, tokens written)."""

    def __init__(self, total_bytes: int | None, show: bool) -> None:
        self.total, self.show = total_bytes, show
        self.tokens, self.t0 = 0, time.perf_counter()

    def __enter__(self) -> _Progress:
        if self.show:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.bar = Progress(
                TextColumn("tokenising"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                transient=True,
            )
            self.bar.__enter__()
            self.task = self.bar.add_task("", total=self.total, rate="")
        return self

    def __call__(self, read: int, tokens: int) -> None:
        self.tokens += tokens
        if self.show:
            rate = self.tokens / max(time.perf_counter() - self.t0, 1e-9)
            self.bar.update(self.task, advance=read, rate=f"{rate:,.0f} tokens/s")

    def __exit__(self, *exc) -> None:
        if self.show:
            self.bar.__exit__(*exc)
