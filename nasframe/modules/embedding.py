"""``nn.Embedding`` as a dynamic module: the embedding width is a slot."""

from __future__ import annotations

import torch
from torch import nn

from nasframe.space.dynamic import DynamicModule, SlotDim


class DynamicEmbedding(nn.Embedding, DynamicModule):
    """``nn.Embedding`` whose embedding width is a slot (the vocabulary is never pruned)."""

    SLOTS = {"embedding_dim": (SlotDim("weight", 1),)}
    TRACE_INPUTS = (("input", None),)
    TRACE_OUTPUT = "embedding_dim"

    @classmethod
    def convert(cls, module: nn.Module) -> DynamicEmbedding:
        cls.check_convertible(module, nn.Embedding)
        return cls._adopt(
            module,
            (
                "num_embeddings",
                "embedding_dim",
                "padding_idx",
                "max_norm",
                "norm_type",
                "scale_grad_by_freq",
                "sparse",
                "weight",
            ),
        )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(
            input,
            self.sliced("weight"),
            self.padding_idx,
            self.max_norm,
            self.norm_type,
            self.scale_grad_by_freq,
            self.sparse,
        )

    def export(self) -> nn.Embedding:
        weight = self.sliced("weight")
        plain = nn.Embedding(
            weight.shape[0],
            weight.shape[1],
            padding_idx=self.padding_idx,
            max_norm=self.max_norm,
            norm_type=self.norm_type,
            scale_grad_by_freq=self.scale_grad_by_freq,
            sparse=self.sparse,
            device=weight.device,
            dtype=weight.dtype,
        )
        with torch.no_grad():
            plain.weight.copy_(weight)
        return plain
