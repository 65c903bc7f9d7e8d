"""BERT (``BertForMaskedLM`` or ``BertModel``) of three layers and its masked-LM loss."""

from __future__ import annotations

import torch
import transformers

VOCAB, LENGTH, MASK_TOKEN = 64, 20, 3
LAYERS = 3
HP = "bert.encoder.layer"


def tiny_model(
    attention: str = "sdpa", tied: bool = True, seed: int = 0, model_class: str = "BertForMaskedLM"
) -> torch.nn.Module:
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=32,
        tie_word_embeddings=tied,
        attn_implementation=attention,
    )
    torch.manual_seed(seed)
    return getattr(transformers, model_class)(config).eval()


def ids(seed: int = 1, rows: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(4, VOCAB, (rows, LENGTH), generator=generator)


def logits(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens).logits


def masked_lm_loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on a fixed 15% of the positions (3 in every 20), replaced by a mask id."""
    rows, length = batch.shape
    pattern = (torch.arange(length)[None] * 7 + torch.arange(rows)[:, None] * 5) % 20 < 3
    inputs = batch.masked_fill(pattern, MASK_TOKEN)
    scores = model(inputs).logits
    return torch.nn.functional.cross_entropy(scores[pattern], batch[pattern])


def exported_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # shared parameters once
