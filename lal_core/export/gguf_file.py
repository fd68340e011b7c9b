"""A lal checkpoint as one GGUF file, the format llama.cpp runs, written with the `gguf` package
that llama.cpp publishes (no llama.cpp checkout, no conversion step).

The file is what llama.cpp's own converter (`convert_hf_to_gguf.py`, class GPT2Model) makes of
`lal export --format hf`, written directly:

- architecture "gpt2", llama.cpp's names for its tensors (token_embd, position_embd,
  blk.N.attn_norm, attn_qkv, attn_output, ffn_norm, ffn_up, ffn_down, output_norm) and the
  hyperparameters its gpt2 loader reads (gpt2.context_length, embedding_length,
  feed_forward_length, block_count, attention.head_count, attention.layer_norm_epsilon);
- matrices in a Linear's (out, in) layout, which is lal's: GGUF lists dimensions the other way
  round, so attn_qkv's {n_embd, 3 n_embd} is lal's (3C, C) as it is (the converter transposes
  GPT-2's Conv1D weights back to this);
- llama.cpp's gpt2 graph requires every bias (LayerNorm and Linear): lal has none, so they are
  written as zeros, which compute the same thing (as in the HF export);
- no `output.weight`: lal ties its head to the token embedding, and llama.cpp reuses
  token_embd when the file has no output tensor;
- only the tokenizer's 50,257 embedding rows, whatever lal's vocab_size (the token list sets
  llama.cpp's vocabulary, and token_embd must match it);
- the tokenizer is r50k_base as GPT-2's BPE (tokenizer.ggml.model "gpt2", pre-tokenizer
  "gpt-2"), its tokens and merges from `tokenizer_files`, <|endoftext|> (50256) as BOS, EOS,
  UNK and PAD, no BOS added to a prompt (lal adds none); an SFT checkpoint carries lal's chat
  template (`hf.CHAT_TEMPLATE`).

One thing differs from lal and cannot be written in the file: llama.cpp's gpt2 uses ggml_gelu,
the tanh approximation of GELU (on CPU through a float16 table), where lal uses the exact GELU.
The logits differ by under 0.01, and an f32 file gave lal's greedy tokens for trained tiny and
small runs (bench/gguf_llama.py; bench/README.md, GGUF in llama.cpp).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

import gguf
import numpy as np

from lal_core.data.tokenizer import EOT_TOKEN
from lal_core.errors import LalError
from lal_core.export.hf import CHAT_TEMPLATE, LAYER_NORM_EPS
from lal_core.export.tokenizer_files import gpt2_tokenizer_files
from lal_core.model.config import ModelConfig, count_parameters
from lal_core.runs.checkpoints import expected_shapes, load_weights, read_header
from lal_core.runs.files import atomic_write

ARCH = "gpt2"
N_TOKENS = EOT_TOKEN + 1  # r50k_base: 50,256 BPE tokens and <|endoftext|>
Q = gguf.GGMLQuantizationType

# The outtypes, as llama.cpp's converter names them (--outtype), and the file type each records.
OUTTYPES: dict[str, gguf.LlamaFileType] = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}

# lal's module names -> llama.cpp's gpt2 tensors (the names come from the gguf package).
_T = gguf.MODEL_TENSOR
_TOP = {"wte": _T.TOKEN_EMBD, "wpe": _T.POS_EMBD, "ln_f": _T.OUTPUT_NORM}
_BLOCK = {
    "ln_1": _T.ATTN_NORM,
    "attn.c_attn": _T.ATTN_QKV,
    "attn.c_proj": _T.ATTN_OUT,
    "ln_2": _T.FFN_NORM,
    "mlp.c_fc": _T.FFN_UP,
    "mlp.c_proj": _T.FFN_DOWN,
}


@dataclass(frozen=True)
class GGUFExport:
    path: Path
    checkpoint: Path
    outtype: str
    chat: bool  # an SFT checkpoint: the file carries the chat template
    n_params: int  # lal's parameters (the file adds zero biases and drops padded rows)
    size: int  # bytes


# -- the tensors ----------------------------------------------------------------------------------
def gguf_name(name: str) -> str:
    """llama.cpp's name for one of lal's canonical tensors, e.g. "blocks.0.attn.c_attn.weight"
    -> "blk.0.attn_qkv.weight"."""
    module, kind = name.rsplit(".", 1)
    if module.startswith("blocks."):
        _, layer, rest = module.split(".", 2)
        return gguf.TENSOR_NAMES[_BLOCK[rest]].format(bid=int(layer)) + "." + kind
    return gguf.TENSOR_NAMES[_TOP[module]] + "." + kind


def gguf_weights(tensors: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """lal's tensors under llama.cpp's gpt2 names, float32, with zero biases and the token
    embedding cut to the tokenizer's rows."""
    if cfg.vocab_size < N_TOKENS:
        raise LalError(
            f"this model's vocabulary ({cfg.vocab_size}) is smaller than the tokenizer's "
            f"({N_TOKENS}); GGUF needs one embedding row per token"
        )
    out = {}
    # every bias llama.cpp's gpt2 requires; lal has none: zeros compute the same
    for name, shape in expected_shapes(replace(cfg, bias=True)).items():
        value = tensors.get(name, np.zeros(shape, dtype=np.float32))
        if name == "wte.weight":
            value = value[:N_TOKENS]  # padded rows are no token's
        out[gguf_name(name)] = np.ascontiguousarray(value, dtype=np.float32)
    return out


def tensor_type(name: str, value: np.ndarray, outtype: str) -> gguf.GGMLQuantizationType:
    """The type a tensor is stored in, by llama.cpp's converter's rules (prepare_tensors):
    1-D tensors (norms, biases) and the position embedding stay F32, as llama.cpp's kernels
    expect; the other matrices, token_embd (also the tied output head) included, take the
    outtype."""
    if outtype == "f32" or value.ndim < 2 or name.startswith(gguf.TENSOR_NAMES[_T.POS_EMBD]):
        return Q.F32
    block, _ = gguf.GGML_QUANT_SIZES[Q.Q8_0]
    if value.shape[-1] % block:
        # Rows that are not whole 32-value blocks cannot be Q8_0; the converter falls back to
        # F16 there, F32 keeps the values exact (no lal config has such a width)
        return Q.F32
    return Q.Q8_0


# -- the metadata ---------------------------------------------------------------------------------
@functools.cache
def gguf_vocab() -> tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]]:
    """(tokens by id, their types, merges): GPT-2's vocab.json and merges.txt of r50k_base, as
    llama.cpp's "gpt2" tokenizer reads them. <|endoftext|> is a control token."""
    vocab, merges = gpt2_tokenizer_files()
    tokens = sorted(vocab, key=vocab.__getitem__)
    if len(tokens) != N_TOKENS or vocab[tokens[-1]] != EOT_TOKEN:
        raise LalError(f"the tokenizer has {len(tokens)} tokens, not r50k_base's {N_TOKENS}")
    types = [int(gguf.TokenType.NORMAL)] * N_TOKENS
    types[EOT_TOKEN] = int(gguf.TokenType.CONTROL)
    return tuple(tokens), tuple(types), tuple(merges)


def add_metadata(
    writer: gguf.GGUFWriter, cfg: ModelConfig, name: str, outtype: str, chat: bool
) -> None:
    """general.*, the gpt2 hyperparameters and the tokenizer (general.architecture is the
    writer's own first key)."""
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_size_label(gguf.size_label(count_parameters(cfg), 0, 0, 0))
    writer.add_file_type(OUTTYPES[outtype])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    writer.add_context_length(cfg.block_size)
    writer.add_embedding_length(cfg.n_embd)
    writer.add_feed_forward_length(4 * cfg.n_embd)
    writer.add_block_count(cfg.n_layer)
    writer.add_head_count(cfg.n_head)
    writer.add_layer_norm_eps(LAYER_NORM_EPS)

    tokens, types, merges = gguf_vocab()
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # GPT-2's pre-tokenizer regex, which r50k_base uses
    writer.add_token_list(list(tokens))
    writer.add_token_types(list(types))
    writer.add_token_merges(list(merges))
    for add_id in (
        writer.add_bos_token_id,
        writer.add_eos_token_id,
        writer.add_unk_token_id,
        writer.add_pad_token_id,
    ):
        add_id(EOT_TOKEN)
    writer.add_add_bos_token(False)  # lal encodes a prompt as it is, with no <|endoftext|> first
    if chat:
        writer.add_chat_template(CHAT_TEMPLATE)


# -- the file -------------------------------------------------------------------------------------
def export_gguf(
    checkpoint: Path, out: Path, outtype: str = "f32", force: bool = False
) -> GGUFExport:
    """Write `out` as a GGUF file of `checkpoint` in `outtype` (f32 or q8_0), whole or not at
    all. An existing `out` is replaced only with `force` (once the new file is complete)."""
    checkpoint, out = Path(checkpoint), Path(out)
    if outtype not in OUTTYPES:
        raise LalError(f"unknown GGUF outtype {outtype!r}; choose one of: {', '.join(OUTTYPES)}")
    tensors, cfg = load_weights(checkpoint)  # a file that is not lal's: a one-line error
    chat = "sft" in read_header(checkpoint)
    _check_target(out, force)
    weights = gguf_weights(tensors, cfg)
    name = f"{checkpoint.parent.name} ({checkpoint.stem})"

    def write(tmp: Path) -> None:
        writer = gguf.GGUFWriter(tmp, ARCH)
        try:
            add_metadata(writer, cfg, name, outtype, chat)
            for key, value in weights.items():
                qtype = tensor_type(key, value, outtype)
                data = value if qtype == Q.F32 else gguf.quants.quantize(value, qtype)
                writer.add_tensor(key, data, raw_dtype=qtype)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()

    try:
        atomic_write(out, write)  # a temp file beside `out`, renamed over it when complete
    except OSError as exc:
        raise LalError(f"cannot write {out}: {exc.strerror or exc}") from None
    return GGUFExport(out, checkpoint, outtype, chat, count_parameters(cfg), out.stat().st_size)


def _check_target(out: Path, force: bool) -> None:
    if out.is_dir():
        raise LalError(f"{out} is a folder; give a file name to write, e.g. {out / 'model.gguf'}")
    if out.exists() and not force:
        raise LalError(f"{out} exists; choose a new file name or pass --force")
    if not out.parent.is_dir():
        raise LalError(f"{out.parent} does not exist; create it first")
