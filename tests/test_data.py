import numpy as np
import pytest

from lal_core.data import corpus as data
from lal_core.errors import DataError


def test_tinyshakespeare_token_counts(shakespeare):
    corpus = data.load_corpus(shakespeare)
    assert len(corpus.tokens) == 338_025
    assert (len(corpus.train), len(corpus.val)) == (304_222, 33_803)
    assert corpus.sha256 == data.TINYSHAKESPEARE_SHA256


def test_tokens_are_cached_under_data_by_sha(small_corpus, isolated_home, monkeypatch):
    first = data.load_corpus(small_corpus)
    cache = isolated_home / "data" / "cache" / f"{first.sha256}.r50k_base.bin"
    assert cache.is_file()
    assert isinstance(first.tokens, np.memmap)

    def fail(text):
        raise AssertionError("tokenised again instead of reading the cache")

    monkeypatch.setattr(data, "_tokenise", fail)
    second = data.load_corpus(small_corpus)
    assert np.array_equal(first.tokens, second.tokens)


def test_chunked_tokenising_equals_whole_text(shakespeare, monkeypatch):
    text = shakespeare.read_text()[:200_000]
    whole = data._tokenise(text)
    monkeypatch.setattr(data, "_CHUNK_CHARS", 3_000)
    assert np.array_equal(data._tokenise(text), whole)


def test_lookup_order(tmp_path, isolated_home, monkeypatch):
    explicit, env, default = (tmp_path / n for n in ("explicit.txt", "env.txt", "default.txt"))
    for p in (explicit, env):
        p.write_text("x")
    monkeypatch.setenv("LAL_DATA", str(env))
    assert data.resolve_corpus(explicit) == explicit
    assert data.resolve_corpus(None) == env
    monkeypatch.delenv("LAL_DATA")
    default = data.default_corpus_path()
    default.parent.mkdir(parents=True)
    default.write_text("y")
    assert data.resolve_corpus(None) == default


def test_missing_default_without_download_is_clear(isolated_home):
    with pytest.raises(DataError, match="--data"):
        data.resolve_corpus(None, download=False)


@pytest.mark.parametrize(
    "content, words",
    [(b"", "empty"), (b"\x00\x01\x02binary", "binary"), (b"caf\xe9 latin-1", "UTF-8")],
)
def test_unusable_corpus_files(tmp_path, content, words):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=words):
        data.load_corpus(path)


def test_too_short_corpus(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("To be or not to be.\n" * 20)
    corpus = data.load_corpus(path)
    with pytest.raises(DataError, match="too short"):
        data.check_corpus_fits(corpus, block_size=128)


def test_eval_windows_tile_the_split_without_overlap():
    split = np.arange(1000, dtype=np.uint16)
    starts = data.eval_windows(split, block_size=64)
    assert len(starts) == (1000 - 1) // 64
    assert np.all(np.diff(starts) == 64)
    batches = list(data.window_batches(split, starts, 64, batch_size=5))
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    assert np.array_equal(x.ravel(), split[: len(starts) * 64])
    assert np.array_equal(y, x + 1)
    sample = data.eval_windows(split, block_size=64, count=4)
    assert len(sample) == 4 and len(set(sample.tolist())) == 4


def test_random_batch_shapes_and_shift():
    split = np.arange(500, dtype=np.uint16)
    x, y = data.random_batch(split, 4, 16, np.random.default_rng(0))
    assert x.shape == y.shape == (4, 16) and x.dtype == np.int64
    assert np.array_equal(y, x + 1)
