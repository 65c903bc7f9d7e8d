"""A tiny Phi-3 (no download): fused ``qkv_proj`` (query, key, value rows) and fused
``gate_up_proj`` (gate, up rows), GQA with 3 KV groups of 2 query heads, head_dim derived
from hidden_size / num_attention_heads."""

from __future__ import annotations

import torch
import transformers

from hf_models.decoders import VOCAB

HEAD_DIM = 8
LAYERS = 3


def tiny_phi3(attention: str = "sdpa", seed: int = 0, **extra) -> transformers.PreTrainedModel:
    config = transformers.Phi3Config(
        vocab_size=VOCAB,
        hidden_size=48,
        intermediate_size=40,
        num_hidden_layers=LAYERS,
        num_attention_heads=6,
        num_key_value_heads=3,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        attn_implementation=attention,
        **extra,
    )
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(config).eval()
