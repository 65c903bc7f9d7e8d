"""Llama-style models (Llama, Mistral, Qwen2) of two layers: the FFN-width tests' builders."""

from __future__ import annotations

import torch
import transformers

FAMILIES = {
    "llama": transformers.LlamaConfig,
    "mistral": transformers.MistralConfig,
    "qwen2": transformers.Qwen2Config,
}
VOCAB = 64


def tiny_model(family: str, attention: str = "sdpa", tied: bool = True, seed: int = 0):
    config = FAMILIES[family](
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tied,
        attn_implementation=attention,
    )
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def ids(seed: int = 1, rows: int = 2, length: int = 9) -> torch.Tensor:
    return torch.randint(0, VOCAB, (rows, length), generator=torch.Generator().manual_seed(seed))


def logits(model, tokens):
    with torch.no_grad():
        return model(tokens).logits
