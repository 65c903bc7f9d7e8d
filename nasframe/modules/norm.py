"""LayerNorm and RMSNorm as dynamic modules: the normalised width is a slot."""

from __future__ import annotations

import torch
from torch import nn

from nasframe.space.dynamic import DynamicModule, SlotDim


class DynamicLayerNorm(nn.LayerNorm, DynamicModule):
    """``nn.LayerNorm`` over the last dimension, whose width is a slot."""

    SLOTS = {"normalized_shape": (SlotDim("weight", 0), SlotDim("bias", 0))}
    TRACE_INPUTS = (("input", "normalized_shape"),)
    TRACE_OUTPUT = "normalized_shape"

    @classmethod
    def supports(cls, module: nn.Module) -> bool:
        return len(module.normalized_shape) == 1

    @classmethod
    def convert(cls, module: nn.Module) -> DynamicLayerNorm:
        cls.check_convertible(module, nn.LayerNorm, needs="one normalised dimension")
        return cls._adopt(
            module, ("normalized_shape", "eps", "elementwise_affine", "weight", "bias")
        )

    def slot_size(self, slot: str) -> int:
        return self.normalized_shape[0]

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        size = (self.active_size("normalized_shape"),)
        return nn.functional.layer_norm(
            input, size, self.sliced("weight"), self.sliced("bias"), self.eps
        )

    def export(self) -> nn.LayerNorm:
        weight, bias = self.sliced("weight"), self.sliced("bias")
        size = self.active_size("normalized_shape")
        plain = nn.LayerNorm(
            size,
            eps=self.eps,
            elementwise_affine=self.elementwise_affine,
            bias=bias is not None,
        )
        if weight is not None:
            plain = plain.to(device=weight.device, dtype=weight.dtype)
            with torch.no_grad():
                plain.weight.copy_(weight)
                if bias is not None:
                    plain.bias.copy_(bias)
        return plain


class DynamicRMSNorm(nn.RMSNorm, DynamicModule):
    """``nn.RMSNorm`` over the last dimension, whose width is a slot."""

    SLOTS = {"normalized_shape": (SlotDim("weight", 0),)}
    TRACE_INPUTS = (("x", "normalized_shape"),)
    TRACE_OUTPUT = "normalized_shape"

    @classmethod
    def supports(cls, module: nn.Module) -> bool:
        return len(module.normalized_shape) == 1

    @classmethod
    def convert(cls, module: nn.Module) -> DynamicRMSNorm:
        cls.check_convertible(module, nn.RMSNorm, needs="one normalised dimension")
        return cls._adopt(module, ("normalized_shape", "eps", "elementwise_affine", "weight"))

    def slot_size(self, slot: str) -> int:
        return self.normalized_shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (self.active_size("normalized_shape"),)
        return nn.functional.rms_norm(x, size, self.sliced("weight"), self.eps)

    def export(self) -> nn.RMSNorm:
        weight = self.sliced("weight")
        size = self.active_size("normalized_shape")
        plain = nn.RMSNorm(size, eps=self.eps, elementwise_affine=self.elementwise_affine)
        if weight is not None:
            plain = plain.to(device=weight.device, dtype=weight.dtype)
            with torch.no_grad():
                plain.weight.copy_(weight)
        return plain
