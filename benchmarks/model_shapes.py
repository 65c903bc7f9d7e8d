"""The Llama shapes the benchmarks build with random weights (nothing is downloaded):
``LlamaConfig`` keyword arguments, one place for every script that measures at these sizes."""

from __future__ import annotations

from typing import Any

#: SmolLM2-135M-Instruct, the main job's model.
SMOLLM2: dict[str, Any] = dict(
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    vocab_size=49152,
    tie_word_embeddings=True,
)

#: TinyLlama-1.1B, the real-size model of issue 15.
TINYLLAMA: dict[str, Any] = dict(
    hidden_size=2048,
    intermediate_size=5632,
    num_hidden_layers=22,
    num_attention_heads=32,
    num_key_value_heads=4,
    vocab_size=32000,
    tie_word_embeddings=False,
)

SHAPES = {"smollm2": SMOLLM2, "tinyllama": TINYLLAMA}
