"""``nn.Linear`` as a dynamic module: input and output features are slots."""

from __future__ import annotations

import torch
from torch import nn

from nasframe.space.dynamic import DynamicModule, LinearMap, SlotDim


class DynamicLinear(nn.Linear, DynamicModule):
    """``nn.Linear`` whose input and output features are slots."""

    SLOTS = {
        "in_features": (SlotDim("weight", 1),),
        "out_features": (SlotDim("weight", 0), SlotDim("bias", 0)),
    }
    TRACE_INPUTS = (("input", "in_features"),)
    TRACE_OUTPUT = "out_features"
    LINEAR_MAPS = (LinearMap("weight", "bias", input_dim=1),)

    @classmethod
    def convert(cls, module: nn.Module) -> DynamicLinear:
        cls.check_convertible(module, nn.Linear)
        return cls._adopt(module, ("in_features", "out_features", "weight", "bias"))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(input, self.sliced("weight"), self.sliced("bias"))

    def export(self) -> nn.Linear:
        weight, bias = self.sliced("weight"), self.sliced("bias")
        plain = nn.Linear(
            weight.shape[1],
            weight.shape[0],
            bias=bias is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
        with torch.no_grad():
            plain.weight.copy_(weight)
            if bias is not None:
                plain.bias.copy_(bias)
        return plain
