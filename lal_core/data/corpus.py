"""The corpus a run reads: a text file or a prepared dataset, its tokens split 90/10 into
train and val, and the batches and eval windows served from them.

A text file: an explicit path, else $LAL_DATA, else data/tinyshakespeare/input.txt, else
TinyShakespeare downloaded (with a progress bar and a sha256 check). Its tokens are cached as
`data/cache/<sha256 of the text>.<encoding>.bin`, so a corpus is tokenised once however many runs
use it, and its own folder may be read-only.

A prepared dataset, for corpora of gigabytes (`lal prepare` writes it: `lal_core.data.prepare`):

    data/datasets/NAME/
        index.json          the shards (file, tokens, sha256), the sources, the token count
        shard-00000.bin     uint16 tokens; documents joined by <|endoftext|> (50256)
        ...

A dataset's identity, what run.json records and a resume checks, is the sha256 of its
index.json. Either way the tokens are memory-mapped, and `data/` is under LAL_HOME (default: the
current directory, the repo root under `uv run`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lal_core.data.tokenizer import ENCODING_NAME, get_tokenizer
from lal_core.errors import DataError

TINYSHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TRAIN_FRACTION = 0.9
_CHUNK_CHARS = 4 << 20  # tokenise a large text in pieces of about 4M characters


def data_dir() -> Path:
    """Where lal keeps corpora, token caches and datasets: data/ under LAL_HOME."""
    return Path(os.environ.get("LAL_HOME") or Path.cwd()) / "data"


def default_corpus_path() -> Path:
    return data_dir() / "tinyshakespeare" / "input.txt"


def resolve_corpus(path: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The corpus file to use: `path`, else $LAL_DATA, else the default (downloaded if absent)."""
    if path is not None and str(path) != "":
        return _check_file(Path(path))
    if os.environ.get("LAL_DATA"):
        return _check_file(Path(os.environ["LAL_DATA"]), source="$LAL_DATA")
    default = default_corpus_path()
    if default.is_file():
        return default
    if not download:
        raise DataError(f"no corpus at {default}; pass --data PATH or set LAL_DATA")
    return download_tinyshakespeare(default)


def _check_file(path: Path, source: str = "corpus") -> Path:
    if not path.exists():
        raise DataError(f"{source} file not found: {path}; pass --data PATH to a UTF-8 text file")
    if not path.is_file():
        raise DataError(f"{source} is not a file: {path}; pass --data PATH to a UTF-8 text file")
    return path


def download_tinyshakespeare(dest: Path) -> Path:
    """Download TinyShakespeare to `dest`, verify its sha256, and move it into place whole."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".download-")
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(TINYSHAKESPEARE_URL, timeout=30) as response,
            Progress(
                *Progress.get_default_columns(),
                DownloadColumn(),
                TransferSpeedColumn(),
                transient=True,
            ) as bar,
        ):
            task = bar.add_task(
                "TinyShakespeare", total=int(response.headers.get("Content-Length") or 0) or None
            )
            while chunk := response.read(1 << 16):
                out.write(chunk)
                digest.update(chunk)
                bar.advance(task, len(chunk))
        if digest.hexdigest() != TINYSHAKESPEARE_SHA256:
            raise DataError("downloaded TinyShakespeare failed its sha256 check; try again later")
        os.replace(tmp, dest)
    except OSError as exc:
        raise DataError(
            f"no corpus found and the download failed ({exc}); "
            "pass --data PATH or set LAL_DATA to a UTF-8 text file"
        ) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _read_text(path: Path) -> tuple[str, str]:
    """The file's text and the sha256 of its bytes, with a clear error for unusable files."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read corpus {path}: {exc.strerror or exc}") from None
    if not raw.strip():
        raise DataError(f"corpus {path} is empty; give a UTF-8 text file with some text in it")
    if b"\x00" in raw[:8192]:
        raise DataError(f"corpus {path} looks binary; give a UTF-8 text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"corpus {path} is not valid UTF-8 (byte {exc.start}); convert it to UTF-8 first"
        ) from None
    return text, hashlib.sha256(raw).hexdigest()


def safe_cut(text: str, i: int) -> bool:
    """Whether text may be cut before position i and each part encoded alone, giving the same
    tokens as the whole (see `_tokenise`)."""
    return text[i - 1] == "\n" and not text[i - 2].isspace() and not text[i].isspace()


def _tokenise(text: str) -> np.ndarray:
    """All tokens of `text` as uint16, tokenised in chunks that end right after a newline.

    The GPT-2 pre-tokeniser keeps a lone newline between two non-space characters as a piece of
    its own, so a cut right after it gives the same tokens as encoding the whole text at once.
    """
    encoding = get_tokenizer()
    pieces, start = [], 0
    while start < len(text):
        end = min(len(text), start + _CHUNK_CHARS)
        if end < len(text):
            cut = end
            while cut > start + 1 and not safe_cut(text, cut):
                cut -= 1
            end = cut if cut > start + 1 else end
        pieces.append(text[start:end])
        start = end
    tokens = [np.asarray(t, dtype=np.uint16) for t in encoding.encode_ordinary_batch(pieces)]
    return np.concatenate(tokens) if tokens else np.zeros(0, dtype=np.uint16)


# -- prepared datasets ---------------------------------------------------------------------
INDEX = "index.json"


def datasets_dir() -> Path:
    return data_dir() / "datasets"


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
    (all of it, copied). What a `Corpus` serves batches and evals from."""

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


# -- the corpus ---------------------------------------------------------------------------------
@dataclass
class Corpus:
    """A tokenised corpus: the tokens split 90/10 into train and val. A text file's tokens are
    one uint16 memory map; a prepared dataset's, its shards' (`TokenSpan`). Either is
    read the same way: len() and contiguous slices."""

    path: Path  # the text file, or the dataset's folder
    sha256: str  # the text file's, or the dataset index's: what a resume checks
    tokens: np.ndarray | TokenSpan  # all tokens
    cache: Path | None = None  # indexes of the corpus are cached beside this path

    @property
    def split_index(self) -> int:
        return int(len(self.tokens) * TRAIN_FRACTION)

    @property
    def train(self) -> np.ndarray | TokenSpan:
        if isinstance(self.tokens, TokenSpan):
            return self.tokens.span(0, self.split_index)
        return self.tokens[: self.split_index]

    @property
    def val(self) -> np.ndarray | TokenSpan:
        if isinstance(self.tokens, TokenSpan):
            return self.tokens.span(self.split_index, len(self.tokens))
        return self.tokens[self.split_index :]

    def describe(self) -> dict:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "tokens": int(len(self.tokens)),
            "train_tokens": int(len(self.train)),
            "val_tokens": int(len(self.val)),
        }


def load_corpus(
    path: str | os.PathLike | None = None,
    cache_dir: Path | None = None,
    block_size: int | None = None,
) -> Corpus:
    """Find, read and tokenise the corpus (once: later calls read the cached tokens).

    With `block_size`, a corpus too short to train that context is refused before anything is
    written. `path` (or $LAL_DATA) may also name a dataset `lal prepare` made: its folder, or
    its name under data/datasets/.
    """
    ref = path if path is not None and str(path) != "" else os.environ.get("LAL_DATA")
    folder = find_dataset(ref) if ref else None
    if folder is not None:
        dataset = open_dataset(folder)
        corpus = Corpus(folder.resolve(), dataset.sha256, dataset.tokens, folder / "tokens")
        if block_size is not None:
            check_corpus_fits(corpus, block_size)
        return corpus
    corpus_path = resolve_corpus(path)
    text, sha = _read_text(corpus_path)
    cache_dir = cache_dir or data_dir() / "cache"
    cache = cache_dir / f"{sha}.{ENCODING_NAME}.bin"
    if not cache.is_file():
        tokens = _tokenise(text)
        if block_size is not None:
            check_corpus_fits(Corpus(corpus_path, sha, tokens), block_size)
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".tokens-")
            with os.fdopen(fd, "wb") as out:
                out.write(tokens.tobytes())
            os.replace(tmp, cache)
        except OSError as exc:
            raise DataError(
                f"cannot write the token cache in {cache_dir}: {exc.strerror or exc}"
            ) from None
    del text
    tokens = np.memmap(cache, dtype=np.uint16, mode="r")
    return Corpus(path=corpus_path.resolve(), sha256=sha, tokens=tokens, cache=cache)


def check_corpus_fits(corpus: Corpus, block_size: int) -> None:
    """Training needs at least one full window (block_size + 1 tokens) in each split."""
    need = block_size + 1
    if len(corpus.val) < need or len(corpus.train) < need:
        raise DataError(
            f"corpus {corpus.path} is too short: {len(corpus.tokens)} tokens give "
            f"{len(corpus.train)} train and {len(corpus.val)} val tokens, and each split needs at "
            f"least {need} for this config's context; use a longer text or a smaller config"
        )


def random_batch(
    split: np.ndarray, batch_size: int, block_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """B random windows: x is block_size tokens, y the same window shifted by one. int64 (B, T)."""
    starts = rng.integers(0, len(split) - block_size, size=batch_size)
    x = np.stack([split[s : s + block_size] for s in starts]).astype(np.int64)
    y = np.stack([split[s + 1 : s + 1 + block_size] for s in starts]).astype(np.int64)
    return x, y


def eval_windows(split: np.ndarray, block_size: int, count: int | None = None) -> np.ndarray:
    """Start offsets of fixed, non-overlapping windows over `split`.

    With `count` None the windows tile the whole split; with a count, that many windows are
    spread evenly over it (used for the train-loss sample, the same size as val).
    """
    n_windows = (len(split) - 1) // block_size
    if count is None or count >= n_windows:
        return np.arange(n_windows, dtype=np.int64) * block_size
    return np.linspace(0, n_windows - 1, count).round().astype(np.int64) * block_size


def val_windows(split: np.ndarray, block_size: int, max_tokens: int = 0) -> np.ndarray:
    """The windows of a val split an eval scores: all of them, or with `max_tokens` at most
    that many tokens' worth, spread evenly over the split (the same ones every time)."""
    count = max(1, max_tokens // block_size) if max_tokens else None
    return eval_windows(split, block_size, count)


def window_batches(split: np.ndarray, starts: np.ndarray, block_size: int, batch_size: int):
    """Yield (x, y) int64 batches for the given window starts."""
    for i in range(0, len(starts), batch_size):
        chunk = starts[i : i + batch_size]
        x = np.stack([split[s : s + block_size] for s in chunk]).astype(np.int64)
        y = np.stack([split[s + 1 : s + 1 + block_size] for s in chunk]).astype(np.int64)
        yield x, y
