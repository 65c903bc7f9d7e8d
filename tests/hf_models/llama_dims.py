"""Llama-style models with three KV groups of two query heads (head_dim 8) over three layers:
the builders of the tests of KV groups, query heads, hidden size and depth."""

from __future__ import annotations

import torch
import transformers

FAMILIES = {
    "llama": transformers.LlamaConfig,
    "mistral": transformers.MistralConfig,
    "qwen2": transformers.Qwen2Config,
}
VOCAB = 64
HEAD_DIM = 8


def tiny_model(
    family: str = "llama",
    attention: str = "sdpa",
    tied: bool = True,
    heads: int = 6,
    kv_heads: int = 3,
    layers: int = 3,
    **extra,
):
    config = FAMILIES[family](
        vocab_size=VOCAB,
        hidden_size=48,
        intermediate_size=40,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=HEAD_DIM,
        tie_word_embeddings=tied,
        attn_implementation=attention,
        **extra,
    )
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def ids(seed: int = 1, rows: int = 2, length: int = 10) -> torch.Tensor:
    return torch.randint(0, VOCAB, (rows, length), generator=torch.Generator().manual_seed(seed))


def logits(model, tokens=None):
    with torch.no_grad():
        return model(ids() if tokens is None else tokens).logits


def random_importance(space, seed: int = 3) -> None:
    generator = torch.Generator().manual_seed(seed)
    for hparam in space.all_hparams.values():
        hparam.importance = torch.rand(hparam.max, generator=generator)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
