"""`lal export --format gguf`: a GGUF file for llama.cpp, read back with the `gguf` package's
reader (llama.cpp itself is too slow to build in CI; bench/gguf_llama.py runs the files in it).

The reader must find every tensor under llama.cpp's gpt2 name with lal's values (exactly in
f32, within Q8_0's rounding in q8_0), the keys llama.cpp's gpt2 loader reads, and r50k_base's
tokens and merges."""

from __future__ import annotations

import errno
from dataclasses import replace
from pathlib import Path

import gguf
import numpy as np
import pytest

from conftest import MICRO, assert_one_line_error, call_main
from lal_core.data.tokenizer import get_tokenizer
from lal_core.errors import LalError
from lal_core.export.gguf_file import export_gguf
from lal_core.export.hf import CHAT_TEMPLATE
from lal_core.export.tokenizer_files import bytes_to_unicode
from lal_core.runs.checkpoints import expected_shapes, save_weights
from lal_core.runs.folder import RunDir
from lal_core.runs.records import RunRecord

# Reading a file's 50,257 tokens back takes the reader seconds: the suite's, not the fast lane's.
pytestmark = pytest.mark.slow

PADDED = replace(MICRO, vocab_size=50304)  # embedding rows past the tokenizer's 50,257
Q8 = gguf.GGMLQuantizationType.Q8_0
F32 = gguf.GGMLQuantizationType.F32

# lal's tensor -> llama.cpp's, for each of MICRO's two layers
LAYER_NAMES = {
    "ln_1": "attn_norm",
    "attn.c_attn": "attn_qkv",
    "attn.c_proj": "attn_output",
    "ln_2": "ffn_norm",
    "mlp.c_fc": "ffn_up",
    "mlp.c_proj": "ffn_down",
}


def expected_tensors(lal: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the file should hold, by llama.cpp's names: lal's tensors, zero biases, the token
    embedding cut to the tokenizer's rows, no output.weight (the head is tied)."""
    out = {
        "token_embd.weight": lal["wte.weight"][:50257],
        "position_embd.weight": lal["wpe.weight"],
        "output_norm.weight": lal["ln_f.weight"],
        "output_norm.bias": np.zeros_like(lal["ln_f.weight"]),
    }
    for i in range(MICRO.n_layer):
        for ours, theirs in LAYER_NAMES.items():
            weight = lal[f"blocks.{i}.{ours}.weight"]
            out[f"blk.{i}.{theirs}.weight"] = weight
            out[f"blk.{i}.{theirs}.bias"] = np.zeros(weight.shape[0], dtype=np.float32)
    return out


def write_checkpoint(path: Path, cfg=PADDED, sft: bool = False) -> dict[str, np.ndarray]:
    """A checkpoint of random weights far from zero (a misplaced tensor could not hide), in
    lal's canonical layout; with numpy alone (no torch: these tests need no model to run)."""
    rng = np.random.default_rng(0)
    weights = {
        k: rng.normal(0.0, 0.5, s).astype(np.float32) for k, s in expected_shapes(cfg).items()
    }
    save_weights(path, weights, cfg, {"sft": {"epochs": 1}, "base": "best"} if sft else None)
    return weights


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """A padded micro checkpoint exported as f32, its SFT twin (same weights) as q8_0, both
    read back (the reader takes seconds: each file is read once)."""
    folder = tmp_path_factory.mktemp("gguf")
    lal = write_checkpoint(folder / "best.safetensors")
    write_checkpoint(folder / "sft.safetensors", sft=True)
    files = {
        "f32": export_gguf(folder / "best.safetensors", folder / "m-f32.gguf", "f32"),
        "q8_0": export_gguf(folder / "sft.safetensors", folder / "m-q8_0.gguf", "q8_0"),
    }
    readers = {t: gguf.GGUFReader(done.path) for t, done in files.items()}
    return {"files": files, "readers": readers, "lal": lal}


def fields(reader: gguf.GGUFReader) -> dict:
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def tensors(reader: gguf.GGUFReader) -> dict:
    return {t.name: t for t in reader.tensors}


# -- the tensors -------------------------------------------------------------------------------
def test_f32_holds_every_tensor_with_lal_values_exactly(exported):
    want = expected_tensors(exported["lal"])
    got = tensors(exported["readers"]["f32"])
    assert sorted(got) == sorted(want)  # every tensor, nothing else (no output.weight)
    for name, value in want.items():
        t = got[name]
        assert t.tensor_type == F32, name
        assert tuple(int(n) for n in reversed(t.shape)) == value.shape, name  # GGUF: reversed
        np.testing.assert_array_equal(t.data, value, err_msg=name)
    assert np.abs(want["blk.0.attn_qkv.weight"]).max() > 0.5  # weights far from zero


def test_q8_0_quantizes_the_matrices_within_its_rounding(exported):
    want = expected_tensors(exported["lal"])
    got = tensors(exported["readers"]["q8_0"])
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        t = got[name]
        if value.ndim == 1 or name == "position_embd.weight":  # as llama.cpp's converter
            assert t.tensor_type == F32, name
            np.testing.assert_array_equal(t.data, value, err_msg=name)
            continue
        assert t.tensor_type == Q8, name
        values = gguf.quants.dequantize(t.data, Q8)
        assert values.shape == value.shape, name
        # Q8_0: blocks of 32 values, each q * d with q in [-127, 127] and d = max|x| / 127
        # stored as float16: an error of at most d/2, plus float16's rounding of d
        blocks = value.reshape(-1, 32)
        bound = np.abs(blocks).max(axis=1, keepdims=True) / 127 * (0.5 + 127 * 2.0**-11)
        error = np.abs(values.reshape(-1, 32) - blocks)
        assert (error <= bound + 1e-7).all(), name
        assert error.max() > 0  # quantized indeed
    # 34 bytes per 32 values (a float16 scale and 32 int8s): about a quarter of f32's 128
    assert got["token_embd.weight"].n_bytes == 50257 * 32 // 32 * 34


# -- the metadata ------------------------------------------------------------------------------
def test_the_keys_llama_cpp_reads(exported):
    for outtype, file_type, kind in (("f32", 0, "best"), ("q8_0", 7, "sft")):
        meta = fields(exported["readers"][outtype])
        assert meta["general.architecture"] == "gpt2"
        assert meta["general.type"] == "model"
        assert meta["general.name"] == f"gguf0 ({kind})"  # the run folder and the checkpoint
        assert meta["general.file_type"] == file_type  # LlamaFileType ALL_F32, MOSTLY_Q8_0
        assert meta["general.quantization_version"] == 2
        hyper = {k.removeprefix("gpt2."): v for k, v in meta.items() if k.startswith("gpt2.")}
        eps = hyper.pop("attention.layer_norm_epsilon")
        assert eps == pytest.approx(1e-5)
        assert hyper == {
            "context_length": 32,
            "embedding_length": 32,
            "feed_forward_length": 128,
            "block_count": 2,
            "attention.head_count": 2,
        }
        assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
        for key in ("bos", "eos", "unknown", "padding"):
            assert meta[f"tokenizer.ggml.{key}_token_id"] == 50256
        assert meta["tokenizer.ggml.add_bos_token"] is False


def test_an_sft_checkpoint_carries_lal_chat_template(exported):
    assert exported["files"]["q8_0"].chat and not exported["files"]["f32"].chat
    assert fields(exported["readers"]["q8_0"])["tokenizer.chat_template"] == CHAT_TEMPLATE
    assert "tokenizer.chat_template" not in fields(exported["readers"]["f32"])  # a base model


def test_the_tokenizer_is_r50k_base(exported):
    meta = fields(exported["readers"]["f32"])
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    merges = meta["tokenizer.ggml.merges"]
    assert len(tokens) == len(types) == 50257 and len(merges) == 50000
    # each token is tiktoken's bytes, written as GPT-2's vocab.json writes them
    encoding, table = get_tokenizer(), bytes_to_unicode()
    for i in range(50256):
        assert tokens[i] == "".join(table[b] for b in encoding.decode_single_token_bytes(i)), i
    assert [tokens[i] for i in (33676, 4720, 25, 220, 198)] == ["ROM", "EO", ":", "Ġ", "Ċ"]
    assert tokens[50256] == "<|endoftext|>" and types[50256] == 3  # CONTROL
    assert set(types[:50256]) == {1}  # NORMAL
    # merge i makes token 256 + i (r50k_base's order); GPT-2's first merges
    assert merges[:3] == ["Ġ t", "Ġ a", "h e"]
    assert all(m.replace(" ", "") == tokens[256 + i] for i, m in enumerate(merges))


# -- the command line --------------------------------------------------------------------------
def test_the_cli_writes_gguf_for_a_gguf_name_and_says_how_to_run_it(exported, tmp_path, capsys):
    path = exported["files"]["f32"].checkpoint
    out = tmp_path / "model.gguf"
    result = call_main(capsys, "export", str(path), "-o", str(out))  # format from the suffix
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and "f32" in lines[0] and "MB" in lines[0]
    assert f"llama-completion -m {out}" in lines[0]
    assert out.read_bytes() == exported["files"]["f32"].path.read_bytes()  # same file

    chat, q8 = exported["files"]["q8_0"].checkpoint, tmp_path / "model.bin"  # with --format
    args = ("export", str(chat), "--format", "gguf", "--outtype", "q8_0", "-o", str(q8))
    result = call_main(capsys, *args)
    assert result.returncode == 0, result.stderr
    assert "q8_0" in result.stdout
    assert f"chat template; run it with llama.cpp: llama-cli -m {q8}" in result.stdout
    assert q8.read_bytes() == exported["files"]["q8_0"].path.read_bytes()


def test_gguf_bad_input_is_one_line_and_leaves_files_as_they_were(exported, tmp_path, capsys):
    path = exported["files"]["f32"].checkpoint
    tmp_path = tmp_path / "out"  # beside the test's home folder
    tmp_path.mkdir()
    out = tmp_path / "model.gguf"
    out.write_bytes(b"mine")

    def export(*args: str, code: int, words: str) -> None:
        assert_one_line_error(call_main(capsys, "export", *args), code, words)

    export(str(path), "-o", str(out), code=1, words="exists; choose a new file name or pass")
    export(str(path), "-o", str(out), "--outtype", "q4_0", code=2, words="invalid choice")
    export(str(path), "-o", str(tmp_path / "hf"), "--outtype", "q8_0", code=1, words="--format")
    export(str(path), "-o", str(tmp_path), "--format", "gguf", code=1, words="is a folder")
    export(str(path), "-o", str(tmp_path / "no" / "m.gguf"), code=1, words="does not exist")
    export(str(tmp_path / "none.safetensors"), "-o", "x.gguf", code=1, words="not found")
    run = RunDir.create(MICRO.name, "torch")  # a run with no checkpoint yet
    run.write(RunRecord(run_id=run.run_id, model_config=MICRO))
    export(run.run_id, "-o", str(tmp_path / "r.gguf"), code=1, words="checkpoint")
    assert out.read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf"]  # nothing else written

    result = call_main(capsys, "export", str(path), "-o", str(out), "--force")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == exported["files"]["f32"].path.read_bytes()


def test_a_failed_write_leaves_no_file_and_says_why(exported, tmp_path, capsys, monkeypatch):
    def full_disk(self, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", full_disk)
    path, out = exported["files"]["f32"].checkpoint, tmp_path / "out" / "m.gguf"
    out.parent.mkdir()
    result = call_main(capsys, "export", str(path), "-o", str(out))
    assert_one_line_error(result, 1, f"cannot write {out}: No space left on device")
    assert list(out.parent.iterdir()) == []  # no file, no temp file


def test_the_library_refuses_an_unknown_outtype_and_a_short_vocabulary(exported, tmp_path):
    path = exported["files"]["f32"].checkpoint
    with pytest.raises(LalError, match="unknown GGUF outtype 'q4_0'"):
        export_gguf(path, tmp_path / "m.gguf", "q4_0")
    write_checkpoint(tmp_path / "short.safetensors", replace(MICRO, vocab_size=1000))
    with pytest.raises(LalError, match=r"vocabulary \(1000\) is smaller than the tokenizer's"):
        export_gguf(tmp_path / "short.safetensors", tmp_path / "m.gguf")
    assert not (tmp_path / "m.gguf").exists()


def test_the_cli_offers_the_library_outtypes():
    from lal_core.cli.export import GGUF_OUTTYPES
    from lal_core.export.gguf_file import OUTTYPES

    assert list(OUTTYPES) == GGUF_OUTTYPES


def test_the_names_are_the_gguf_package_names_for_gpt2(exported):
    """The names llama.cpp loads, as the gguf package lists them for gpt2 (all but the output
    head, which is tied)."""
    layers = range(MICRO.n_layer)
    arch = gguf.MODEL_TENSORS[gguf.MODEL_ARCH.GPT2]
    names = {gguf.TENSOR_NAMES[t].format(bid=i) for t in arch for i in layers}
    got = {name.rsplit(".", 1)[0] for name in tensors(exported["readers"]["q8_0"])}
    assert got == names - {"output"}
