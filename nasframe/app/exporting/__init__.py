"""The app's exports beyond the nasframe format: a GGUF file for llama.cpp (``OUT/gguf``),
written by the search and by ``nasframe export DIR --to gguf``."""
