"""GGUF export for llama.cpp: per-layer pruned Llama, Mistral and Qwen2 models (``deci``), or
uniform ones (``llama``), with the source model's tokenizer. See ``writer.write_gguf``."""

from nasframe_transformers.gguf.writer import write_gguf

__all__ = ["write_gguf"]
