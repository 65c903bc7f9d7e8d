"""GPT-2 of three blocks (Conv1D projections, fused q/k/v) and the names of its hparams."""

from __future__ import annotations

import torch
import transformers

VOCAB = 64
HIDDEN = "transformer.hidden_size"
DEPTH = "transformer.h.depth"


def tiny_config(attention: str = "sdpa", **overrides) -> transformers.GPT2Config:
    return transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=32,
        n_embd=32,
        n_layer=3,
        n_head=4,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation=attention,
        **overrides,
    )


def tiny_model(attention: str = "sdpa", seed: int = 0, **overrides):
    torch.manual_seed(seed)
    config = tiny_config(attention, **overrides)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def ids(seed: int = 1, rows: int = 2, length: int = 9) -> torch.Tensor:
    return torch.randint(0, VOCAB, (rows, length), generator=torch.Generator().manual_seed(seed))


def logits(model, tokens=None):
    with torch.no_grad():
        return model(ids() if tokens is None else tokens).logits


def param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def heads(i: int) -> str:
    return f"transformer.h.{i}.attn.num_heads"


def inner(i: int) -> str:
    return f"transformer.h.{i}.mlp.n_inner"


def rank(space, name: str, order: list[int]) -> None:
    """Importance making ``order`` the units from most to least important."""
    scores = torch.zeros(space.all_hparams[name].max)
    scores[torch.tensor(order)] = torch.arange(len(order), 0, -1, dtype=torch.float)
    space.all_hparams[name].importance = scores
