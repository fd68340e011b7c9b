"""`lal prepare`: text files, folders and JSONL tokenised into sharded datasets that training
reads like a text file."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from conftest import assert_one_line_error, call_main, one_short_sample
from lal_core.data import prepare as preparing
from lal_core.data.corpus import find_dataset, load_corpus, open_dataset
from lal_core.data.prepare import prepare
from lal_core.data.tokenizer import EOT_TOKEN, encode
from lal_core.errors import DataError
from lal_core.model.recipe import TrainConfig
from lal_core.runs.folder import RunDir
from lal_core.training.request import RunRequest
from lal_core.training.train import Trainer


def joined(documents: list[str]) -> list[int]:
    """Each document encoded alone, joined by <|endoftext|>."""
    out: list[int] = []
    for i, doc in enumerate(documents):
        out += ([EOT_TOKEN] if i else []) + encode(doc)
    return out


@pytest.fixture
def documents(shakespeare) -> list[str]:
    text = shakespeare.read_text()
    return [text[:9000], text[20_000:26_000] + "\n\n  indented\n", "a short one, no newline"]


@pytest.fixture
def small_pieces(monkeypatch):
    """Text read 1,000 bytes at a time and shards of 1,500 tokens: documents cut into many
    pieces, shards cut mid-document."""
    monkeypatch.setattr(preparing, "PIECE_BYTES", 1000)
    return 1500


def test_a_folder_gives_each_file_encoded_alone_joined_by_eot(
    tmp_path, documents, small_pieces, isolated_home
):
    folder = tmp_path / "books"
    (folder / "b").mkdir(parents=True)
    # Sorted by path: a.txt, b/c.md, d.txt; hidden files are not documents.
    (folder / "d.txt").write_text(documents[2])
    (folder / "a.txt").write_text(documents[0])
    (folder / "b" / "c.md").write_text(documents[1])
    (folder / ".notes.txt").write_text("not a document")
    dataset = prepare(folder, shard_tokens=small_pieces)
    assert dataset.folder == isolated_home / "data" / "datasets" / "books"
    assert np.asarray(dataset.tokens).tolist() == joined(documents)
    index = json.loads((dataset.folder / "index.json").read_text())
    assert index["documents"] == 3 and index["tokens"] == len(joined(documents))
    assert len(index["shards"]) > 2 and all(s["tokens"] <= small_pieces for s in index["shards"])
    # Reads across a shard boundary are the same as from the joined tokens.
    whole, cut = np.array(joined(documents)), small_pieces
    assert np.array_equal(dataset.tokens[cut - 5 : cut + 5], whole[cut - 5 : cut + 5])
    assert np.array_equal(dataset.tokens.span(100, 4000)[1400:1600], whole[1500:1700])


def test_a_gzipped_jsonl_gives_each_line_encoded_alone(tmp_path, documents, isolated_home):
    path = tmp_path / "docs.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for doc in documents:
            f.write(json.dumps({"text": doc, "id": 1}) + "\n")
    dataset = prepare(path, name="docs")
    assert np.asarray(dataset.tokens).tolist() == joined(documents)


@pytest.mark.slow
def test_training_reads_a_dataset_by_name_and_records_its_identity(
    tmp_path, documents, small_pieces, isolated_home, micro_cfg
):
    (tmp_path / "a.txt").write_text(documents[0] * 3)
    dataset = prepare(tmp_path / "a.txt", name="mine", shard_tokens=small_pieces)
    corpus = load_corpus("mine")
    assert corpus.sha256 == dataset.sha256 and len(corpus.tokens) == len(dataset.tokens)
    assert len(corpus.train) + len(corpus.val) == len(corpus.tokens)
    cfg = one_short_sample(TrainConfig(max_iters=2, eval_interval=2, batch_size=2))
    result = Trainer(RunRequest(micro_cfg, cfg, data="mine")).run_training()
    record = RunDir(result.run_dir).read()
    assert result.status == "completed" and record.data.sha256 == dataset.sha256
    assert record.data.path == str(dataset.folder.resolve())
    # A resume finds the same dataset again, by the folder the run recorded.
    assert find_dataset(record.data.path) == dataset.folder.resolve()


def test_an_interrupted_prepare_leaves_nothing_training_would_read(
    tmp_path, documents, small_pieces, isolated_home, monkeypatch
):
    (tmp_path / "a.txt").write_text(documents[0])
    calls = []

    def interrupted(text):
        calls.append(text)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return np.asarray(encode(text), dtype=np.uint16)

    with monkeypatch.context() as patch:
        patch.setattr(preparing, "encode_array", interrupted)
        with pytest.raises(KeyboardInterrupt):
            prepare(tmp_path / "a.txt", name="cut", shard_tokens=small_pieces, workers=1)
    assert 3 <= len(calls) < 9  # it was interrupted partway (9,000 characters, 1,000 a piece)
    assert not any((isolated_home / "data" / "datasets").iterdir())  # not even a hidden folder
    with pytest.raises(DataError):
        load_corpus("cut")
    # Run again, it starts over and finishes.
    assert open_dataset(prepare(tmp_path / "a.txt", name="cut").folder).index["documents"] == 1


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda d: d.mkdir(), "holds no files"),
        (lambda d: (d.mkdir(), (d / "x.jsonl").write_text('{"text": "a"}\n{"body": "b"}\n')),
         "line 2 has no `text`"),
        (lambda d: (d.mkdir(), (d / "a.txt").write_text("fine\n"),
                    (d / "b.bin").write_bytes(b"\x00\x01\x02" * 100)), "b.bin looks binary"),
        (lambda d: (d.mkdir(), (d / "latin.txt").write_bytes("caf\xe9\n".encode("latin-1"))),
         "latin.txt is not UTF-8"),
        (lambda d: (d.mkdir(), (d / "x.jsonl.gz").write_bytes(b"not gzip")),
         "not a whole gzip file"),
    ],
    ids=["empty folder", "jsonl without text", "binary file", "not utf-8", "bad gzip"],
)  # fmt: skip
def test_bad_sources_are_one_line_with_nothing_written(tmp_path, capsys, isolated_home, make,
                                                       words):  # fmt: skip
    make(tmp_path / "src")
    result = call_main(capsys, "prepare", tmp_path / "src")
    assert_one_line_error(result, 1, words)
    datasets_dir = isolated_home / "data" / "datasets"
    assert not datasets_dir.exists() or not any(datasets_dir.iterdir())


def test_prepare_says_what_it_made_and_refuses_to_overwrite(tmp_path, capsys, isolated_home):
    (tmp_path / "notes.txt").write_text("some words\nand more\n")
    result = call_main(capsys, "prepare", tmp_path / "notes.txt")
    assert result.returncode == 0 and "lal train --data notes" in result.stdout
    assert_one_line_error(call_main(capsys, "prepare", tmp_path / "notes.txt"), 1, "already exists")
    assert_one_line_error(call_main(capsys, "train", "--nproc", "0"), 2, "--nproc")
