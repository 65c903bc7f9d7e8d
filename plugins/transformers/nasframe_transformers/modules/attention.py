"""The projection views dynamic attention blocks run their family's forward with.

A dynamic attention (:mod:`nasframe_transformers.modules.decoder_attention`, BERT's in
:mod:`nasframe_transformers.modules.bert_heads`) subclasses the family's own attention class
and runs its forward; only its projections must compute with the weights sliced to the kept
heads. Each projection is adopted as a :class:`SlicedProjection` sharing the original's
parameters, which for one forward runs with the weights its owner hands it.
"""

from __future__ import annotations

import torch
from torch import nn


class SlicedProjection(nn.Linear):
    """A projection of a dynamic attention: for one forward it runs with the weights its
    owner sliced (``override``), so the owner needs no reference from its children."""

    override: tuple[torch.Tensor, torch.Tensor | None] | None = None

    @classmethod
    def adopt(cls, linear: nn.Linear) -> SlicedProjection:
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        new.weight = linear.weight
        new.register_parameter("bias", linear.bias)
        new.train(linear.training)
        return new

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        weight, bias = self.override or (self.weight, self.bias)
        return nn.functional.linear(input, weight, bias)


class _NoHandle:
    """The handle of a hook another handle already removes (one hook gates two masks)."""

    def remove(self) -> None:
        pass
