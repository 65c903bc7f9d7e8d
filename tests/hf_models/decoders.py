"""Tiny decoders of the families the structure description recognises (no download): each
builder shows the patterns it exercises."""

from __future__ import annotations

import torch
import transformers

VOCAB = 100
HEAD_DIM = 8


def _qwen3(**extra):  # q/k norms over the head dimension, GQA, head_dim in the config
    return transformers.Qwen3Config(
        hidden_size=48,
        intermediate_size=40,
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=3,
        head_dim=HEAD_DIM,
        **extra,
    )


def _gemma3(**extra):  # sandwich norms, scaled embeddings, sliding-window layers, GQA
    return transformers.Gemma3TextConfig(
        hidden_size=48,
        intermediate_size=40,
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=3,
        head_dim=HEAD_DIM,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        **extra,
    )


def _opt(**extra):  # plain fc1/fc2 MLP, learned positions, biases, LayerNorm, out_proj
    return transformers.OPTConfig(
        hidden_size=32,
        ffn_dim=40,
        num_hidden_layers=3,
        num_attention_heads=4,
        word_embed_proj_dim=32,
        max_position_embeddings=64,
        **extra,
    )


def _gptj(**extra):  # parallel residual, partial rotary, fc_in/fc_out, a biased head
    return transformers.GPTJConfig(
        n_embd=32, n_inner=40, n_layer=3, n_head=4, rotary_dim=4, n_positions=64, **extra
    )


CONFIGS = {"qwen3": _qwen3, "gemma3": _gemma3, "opt": _opt, "gptj": _gptj}
# Families whose config states head_dim (hidden size and heads prune freely in a plain
# config); the others derive it from hidden_size / num_attention_heads.
STATES_HEAD_DIM = {"qwen3", "gemma3"}


def tiny_model(family: str, attention: str = "sdpa", seed: int = 0, **extra):
    config = CONFIGS[family](vocab_size=VOCAB, attn_implementation=attention, **extra)
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def ids(seed: int = 1, rows: int = 2, length: int = 10) -> torch.Tensor:
    return torch.randint(0, VOCAB, (rows, length), generator=torch.Generator().manual_seed(seed))


def padding_mask(tokens: torch.Tensor) -> torch.Tensor:
    """Left padding on the first row (three positions)."""
    mask = torch.ones_like(tokens)
    mask[0, :3] = 0
    return mask


def logits(model, tokens=None, mask=None):
    tokens = ids() if tokens is None else tokens
    with torch.no_grad():
        return model(tokens, attention_mask=mask).logits


def masked_logits(model, tokens=None):
    """Logits of the unpadded positions under a padding mask (padded ones are undefined)."""
    tokens = ids() if tokens is None else tokens
    mask = padding_mask(tokens)
    return logits(model, tokens, mask)[mask.bool()]


def random_importance(space, seed: int = 3) -> None:
    generator = torch.Generator().manual_seed(seed)
    for hparam in space.all_hparams.values():
        hparam.importance = torch.rand(hparam.max, generator=generator)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
