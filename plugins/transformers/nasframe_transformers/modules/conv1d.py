"""transformers' ``Conv1D`` (GPT-2's projections) with prunable input and output features.

``Conv1D`` is a Linear with the weight stored transposed, ``(nx, nf)`` = (in, out), and
computed as ``addmm(bias, x, weight)``. The dynamic version keeps that layout and that kernel,
so at full size it computes bit for bit what the original does, and it exports to a plain
``Conv1D`` that ``from_pretrained`` checkpoints load into unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from nasframe.space.dynamic import DynamicModule, LinearMap, SlotDim


def conv1d_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``Conv1D.forward`` with given weights: ``x @ weight + bias`` over the last dimension."""
    out = torch.addmm(bias, x.reshape(-1, x.size(-1)), weight)
    return out.view(*x.shape[:-1], weight.shape[1])


def plain_conv1d(weight: torch.Tensor, bias: torch.Tensor) -> Conv1D:
    """A plain ``Conv1D`` holding copies of ``weight`` (nx, nf) and ``bias`` (nf)."""
    nx, nf = weight.shape
    plain = Conv1D(nf, nx).to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        plain.weight.copy_(weight)
        plain.bias.copy_(bias)
    return plain


class DynamicConv1D(Conv1D, DynamicModule):
    """``Conv1D`` whose input (``nx``, weight rows) and output (``nf``, weight columns and
    bias) features are slots."""

    SLOTS = {
        "nx": (SlotDim("weight", 0),),
        "nf": (SlotDim("weight", 1), SlotDim("bias", 0)),
    }
    TRACE_INPUTS = (("x", "nx"),)
    TRACE_OUTPUT = "nf"
    LINEAR_MAPS = (LinearMap("weight", "bias", input_dim=0),)  # weight is (in, out)

    @classmethod
    def convert(cls, module: nn.Module) -> DynamicConv1D:
        cls.check_convertible(module, Conv1D)
        return cls._adopt(module, ("nf", "nx", "weight", "bias"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv1d_forward(x, self.sliced("weight"), self.sliced("bias"))

    def export(self) -> Conv1D:
        return plain_conv1d(self.sliced("weight"), self.sliced("bias"))


class SlicedConv1D(Conv1D):
    """A projection of a dynamic GPT-2 attention: for one forward it runs with the weights its
    owner sliced (``override``), so the owner needs no reference from its children."""

    override: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def adopt(cls, conv: Conv1D) -> SlicedConv1D:
        """A SlicedConv1D sharing ``conv``'s parameters (not a copy: tied stays tied)."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.nf, new.nx = conv.nf, conv.nx
        new.weight = conv.weight
        new.bias = conv.bias
        new.train(conv.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.override or (self.weight, self.bias)
        return conv1d_forward(x, weight, bias)


def setup_conv1d_input(module: DynamicConv1D) -> Any:
    """gradnas mask on each input feature of the Conv1D (the units of its ``nx`` hparam).

    For GPT-2's FFN this is the consuming ``c_proj``'s input, after the activation: a mask of
    0 is exactly removing that neuron. A residual stream is masked on its writes instead.
    """
    from gradnas.data_manager import GradientDataManager

    hparam = module.get_hparam("nx")
    if hparam is None or getattr(hparam, "is_residual_stream", False):
        return None
    manager = GradientDataManager(hparam.max, module)
    manager.hparam = hparam

    def gate_input(_: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        mask = manager.mask if hparam.active == hparam.max else manager.mask[hparam.active_slice]
        if args:
            x = args[0]
            return (x * mask.to(x.dtype), *args[1:]), kwargs
        x = kwargs["x"]
        return args, {**kwargs, "x": x * mask.to(x.dtype)}

    return manager, module.register_forward_pre_hook(gate_input, with_kwargs=True)
