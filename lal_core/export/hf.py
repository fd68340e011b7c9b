"""A lal checkpoint as a Hugging Face GPT-2 folder: `GPT2LMHeadModel` and its tokenizer.

lal's model is GPT-2's architecture, so the export is a renaming with three differences minded:

- GPT-2 keeps its projections in `Conv1D` layers, whose weight is (in, out): the transpose of a
  `Linear` weight (out, in);
- lal's Linear and LayerNorm layers have no biases (docs/recipe.md, The model): GPT-2 expects
  them, so they are exported as zeros, which compute the same thing;
- GPT-2's default activation is `gelu_new` (the tanh approximation); lal uses the exact GELU,
  which transformers calls "gelu".

The output head is the token embedding (weight tying), so the file holds no `lm_head.weight`.
An SFT checkpoint also carries lal's chat format as a chat template. Nothing here imports
transformers (a dev dependency, used to check exports): the files are written as they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from lal_core.data.tokenizer import EOT_TOKEN
from lal_core.errors import LalError
from lal_core.export.tokenizer_files import EOT_TEXT, gpt2_tokenizer_files
from lal_core.generation import sampling
from lal_core.model.config import ModelConfig, count_parameters
from lal_core.runs.checkpoints import expected_shapes, load_weights, read_header, write_tensors
from lal_core.runs.files import atomic_folder
from lal_core.sft.chat_format import ASSISTANT_MARK, END_MARK, SYSTEM_LINE, SYSTEM_MARK

LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which lal's model uses; GPT-2's as well

# lal's chat format (lal_core/sft/chat_format.py) for `apply_chat_template`: each turn is
# "<|role|>text<|end|>" and a newline (so "<|user|>", "<|assistant|>"); the system line is
# lal's unless a system message gives one; the generation prompt is "<|assistant|>". A single
# user turn renders `chat_prompt`.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(system='" + SYSTEM_LINE + "') -%}"
    "{%- for m in messages if m['role'] == 'system' -%}"
    "{%- set ns.system = m['content'] | trim -%}"
    "{%- endfor -%}"
    "{{- '" + SYSTEM_MARK + "' + ns.system + '" + END_MARK + "\\n' -}}"
    "{%- for m in messages if m['role'] != 'system' -%}"
    "{{- '<|' + m['role'] + '|>' + (m['content'] | trim) + '" + END_MARK + "\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '" + ASSISTANT_MARK + "' -}}{%- endif -%}"
)


@dataclass(frozen=True)
class Export:
    folder: Path
    checkpoint: Path
    chat: bool  # an SFT checkpoint: the tokenizer carries the chat template
    n_params: int


# -- the pieces of the folder ---------------------------------------------------------------------
def hf_weights(tensors: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """lal's tensors under GPT2LMHeadModel's names, Conv1D weights transposed, zero biases."""
    out = {}
    # lal's canonical layout with every bias GPT-2 has; lal has none: zeros compute the same
    for name, shape in expected_shapes(replace(cfg, bias=True)).items():
        value = tensors.get(name, np.zeros(shape, dtype=np.float32))
        if name.startswith("blocks.") and len(shape) == 2:
            value = value.T  # Linear (out, in) -> Conv1D (in, out)
        out["transformer." + name.replace("blocks.", "h.")] = np.ascontiguousarray(value)
    return out


def hf_config(cfg: ModelConfig) -> dict[str, Any]:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.block_size,
        "n_ctx": cfg.block_size,  # GPT-2's original key, which llama.cpp's converter reads
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": 4 * cfg.n_embd,
        "activation_function": "gelu",  # exact GELU, as lal's MLP (GPT-2's default: gelu_new)
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "bos_token_id": EOT_TOKEN,
        "eos_token_id": EOT_TOKEN,
        "dtype": "float32",
        "torch_dtype": "float32",  # the key older transformers read
        "use_cache": True,
    }


def generation_config() -> dict[str, Any]:
    """lal's sampling defaults, in the keys that mean the same in transformers."""
    return {
        "bos_token_id": EOT_TOKEN,
        "eos_token_id": EOT_TOKEN,
        "pad_token_id": EOT_TOKEN,
        "do_sample": True,
        "temperature": sampling.DEFAULT_TEMPERATURE,
        "top_k": sampling.DEFAULT_TOP_K,
        "max_new_tokens": sampling.DEFAULT_TOKENS,
    }


def tokenizer_config(cfg: ModelConfig, chat: bool) -> dict[str, Any]:
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": cfg.block_size,
        "bos_token": EOT_TEXT,
        "eos_token": EOT_TEXT,
        "unk_token": EOT_TEXT,
        "pad_token": EOT_TEXT,
        "add_prefix_space": False,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {
            str(EOT_TOKEN): {
                "content": EOT_TEXT,
                "lstrip": False,
                "normalized": True,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
        },
    }
    if chat:
        config["chat_template"] = CHAT_TEMPLATE
    return config


def model_card(checkpoint: Path, cfg: ModelConfig, chat: bool) -> str:
    kind = "fine-tuned for chat (lal sft)" if chat else "pre-trained"
    usage = (
        "messages = [{'role': 'user', 'content': 'Who is Romeo?'}]\n"
        "ids = tok.apply_chat_template(messages, add_generation_prompt=True, "
        "return_tensors='pt')\n"
        "out = model.generate(ids, stop_strings=['<|end|>'], tokenizer=tok)\n"
        if chat
        else "out = model.generate(**tok('ROMEO:', return_tensors='pt'))\n"
    )
    return (
        f"# {checkpoint.parent.name} ({checkpoint.stem})\n\n"
        f"A small GPT-2-style model trained with lal, {kind}: config {cfg.name}, "
        f"{cfg.n_layer} layers, {cfg.n_head} heads, width {cfg.n_embd}, context {cfg.block_size}, "
        f"{count_parameters(cfg):,} parameters, the GPT-2 tokenizer (r50k_base).\n\n"
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "model = AutoModelForCausalLM.from_pretrained('.')\n"
        "tok = AutoTokenizer.from_pretrained('.')\n"
        f"{usage}print(tok.decode(out[0]))\n```\n"
    )


# -- the folder -----------------------------------------------------------------------------------
def export_hf(checkpoint: Path, out: Path, force: bool = False) -> Export:
    """Write `out` as a Hugging Face folder for `checkpoint`, whole or not at all.

    `out` must not exist or be empty, unless `force` (then it is replaced once the new folder
    is complete)."""
    checkpoint, out = Path(checkpoint), Path(out)
    tensors, cfg = load_weights(checkpoint)  # a file that is not lal's: a one-line error
    chat = "sft" in read_header(checkpoint)
    _check_target(out, force)
    vocab, merges = gpt2_tokenizer_files()

    def write(folder: Path) -> None:
        weights = hf_weights(tensors, cfg)
        write_tensors(
            folder / "model.safetensors", weights, {"format": "pt"}, "the exported weights"
        )
        _json(folder / "config.json", hf_config(cfg))
        _json(folder / "generation_config.json", generation_config())
        _json(folder / "tokenizer_config.json", tokenizer_config(cfg, chat))
        special = ("bos_token", "eos_token", "unk_token", "pad_token")
        _json(folder / "special_tokens_map.json", dict.fromkeys(special, EOT_TEXT))
        _json(folder / "vocab.json", vocab, indent=None)
        (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        (folder / "README.md").write_text(model_card(checkpoint, cfg, chat))

    atomic_folder(out, write)  # whole or not at all
    return Export(out, checkpoint, chat, count_parameters(cfg))


def _json(path: Path, data: dict, indent: int | None = 2) -> None:
    path.write_text(json.dumps(data, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")


def _check_target(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise LalError(f"{out} is a file; give a folder to export into")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise LalError(f"{out} exists and is not empty; choose a new folder or pass --force")
    if not out.parent.is_dir():
        raise LalError(f"{out.parent} does not exist; create it first")
