"""Models out of lal, in the field's formats: a Hugging Face GPT-2 folder (`hf`), with the
GPT-2 tokenizer files written from tiktoken's r50k_base (`tokenizer_files`), and a GGUF file
for llama.cpp (`gguf_file`: imported from there, so that the rest does not load `gguf`)."""

from lal_core.export.hf import Export, export_hf

__all__ = ["Export", "export_hf"]
