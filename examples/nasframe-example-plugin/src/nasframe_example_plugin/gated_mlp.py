"""A gated MLP module type and the dynamic version that makes its widths prunable.

``GatedMLP`` computes ``w_down(silu(w_gate x) * w_up x)`` with three raw parameters, so nasframe
cannot see into it as it can into a chain of ``nn.Linear``: it needs to be told which
parameter dimensions each prunable width owns. That is all ``DynamicGatedMLP`` declares.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from nasframe.space.dynamic import DynamicModule, SlotDim


class GatedMLP(nn.Module):
    """``w_down(silu(w_gate x) * w_up x)`` (SwiGLU without biases), as one module."""

    def __init__(
        self, dim: int, hidden: int, device: torch.device | None = None, dtype=None
    ) -> None:
        super().__init__()
        kwargs = {"device": device, "dtype": dtype}
        self.w_gate = nn.Parameter(torch.empty(hidden, dim, **kwargs))
        self.w_up = nn.Parameter(torch.empty(hidden, dim, **kwargs))
        self.w_down = nn.Parameter(torch.empty(dim, hidden, **kwargs))
        for weight in (self.w_gate, self.w_up, self.w_down):
            nn.init.normal_(weight, std=weight.shape[1] ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.silu(F.linear(x, self.w_gate)) * F.linear(x, self.w_up), self.w_down)


class DynamicGatedMLP(DynamicModule):
    """``GatedMLP`` whose hidden width (``hidden``) and model width (``dim``) are slots.

    The gated product passes through ``product`` (an identity module) before ``w_down``:
    that is where a per-unit gate can be attached (the gradnas setup puts its mask there).
    """

    # slot -> every parameter dimension that slot's units index. Slicing, sorting units by
    # importance, parameter counting and export's weight selection all come from this table.
    SLOTS = {
        "hidden": (SlotDim("w_gate", 0), SlotDim("w_up", 0), SlotDim("w_down", 1)),
        "dim": (SlotDim("w_gate", 1), SlotDim("w_up", 1), SlotDim("w_down", 0)),
    }
    # For tie discovery: the last dimension of argument ``x`` is the ``dim`` slot, and so is
    # the output's. ``hidden`` never leaves the module, so it is a width of its own.
    TRACE_INPUTS = (("x", "dim"),)
    TRACE_OUTPUT = "dim"

    def __init__(self, module: GatedMLP) -> None:
        super().__init__()
        # Share the very same Parameters: no copy, and optimizer state or tying survives.
        self.w_gate, self.w_up, self.w_down = module.w_gate, module.w_up, module.w_down
        self.product = nn.Identity()
        self.train(module.training)

    @classmethod
    def convert(cls, module: nn.Module) -> DynamicGatedMLP:
        cls.check_convertible(module, GatedMLP)
        return cls(module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = F.linear(x, self.sliced("w_gate"))
        up = F.linear(x, self.sliced("w_up"))
        return F.linear(self.product(F.silu(gate) * up), self.sliced("w_down"))

    def export(self) -> GatedMLP:
        w_gate, w_up, w_down = (self.sliced(name) for name in ("w_gate", "w_up", "w_down"))
        hidden, dim = w_gate.shape
        plain = GatedMLP(dim, hidden, device=w_gate.device, dtype=w_gate.dtype)
        with torch.no_grad():
            plain.w_gate.copy_(w_gate)
            plain.w_up.copy_(w_up)
            plain.w_down.copy_(w_down)
        return plain
