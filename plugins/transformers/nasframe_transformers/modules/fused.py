"""Fused projections (Phi-3's ``qkv_proj`` and ``gate_up_proj``) made dynamic.

A fused projection stacks several projections' rows in one ``nn.Linear``. When its sections
have equal sizes and the same units (``gate_up_proj``: gate rows then up rows, both indexed by
the FFN width) one slot dimension with ``groups=2`` expresses it (:class:`DynamicPackedLinear`).
Query/key/value sections differ in size (query heads, then KV heads, then KV heads) and are
indexed by different slots, which no single slot dimension can say; so the attention adopts
the fused projection as a :class:`FusedProjection` whose sections are separate ``nn.Linear``
children holding *views* of the fused weight's rows (the memory is shared, nothing is
copied). The slots then index the sections exactly as they index separate q/k/v projections,
parameter counts and sorting see ordinary parameters, and the forward and the export put the
kept rows of the sections back together in their original order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nasframe.modules.linear import DynamicLinear
from nasframe.space.dynamic import SlotDim


class DynamicPackedLinear(DynamicLinear):
    """A linear whose output rows are two equal sections of the same units (gate then up):
    the ``out_features`` unit ``i`` is row ``i`` of each section."""

    SLOTS = {
        "in_features": (SlotDim("weight", 1),),
        "out_features": (SlotDim("weight", 0, groups=2), SlotDim("bias", 0, groups=2)),
    }


def _section(weight: torch.Tensor, bias: torch.Tensor | None, start: int, rows: int) -> nn.Linear:
    """An ``nn.Linear`` whose parameters view rows ``start:start+rows`` of the fused ones."""
    section = nn.Linear.__new__(nn.Linear)
    nn.Module.__init__(section)
    section.in_features, section.out_features = weight.shape[1], rows
    section.weight = nn.Parameter(weight.detach()[start : start + rows], weight.requires_grad)
    kept_bias = None if bias is None else nn.Parameter(bias.detach()[start : start + rows])
    section.register_parameter("bias", kept_bias)
    return section


class FusedProjection(nn.Module):
    """A fused projection split into named row sections (each a child ``nn.Linear``).

    For one forward its owner sets ``override`` to the fused (weight, bias) of the kept rows;
    without it the full sections run, concatenated in their original order.
    """

    override: tuple[torch.Tensor, torch.Tensor | None] | None = None

    @classmethod
    def adopt(cls, linear: nn.Linear, sections: Sequence[tuple[str, int]]) -> FusedProjection:
        """Split ``linear``'s rows into ``sections`` ((name, rows), in order)."""
        if sum(rows for _, rows in sections) != linear.out_features:
            raise ValueError(f"sections {sections} do not add up to {linear.out_features} rows")
        new = cls()
        start = 0
        for name, rows in sections:
            setattr(new, name, _section(linear.weight, linear.bias, start, rows))
            start += rows
        new.section_names = tuple(name for name, _ in sections)
        new.train(linear.training)
        return new

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.override is not None:
            weight, bias = self.override
        else:
            sections = [getattr(self, name) for name in self.section_names]
            weight = torch.cat([s.weight for s in sections])
            bias = None if sections[0].bias is None else torch.cat([s.bias for s in sections])
        return nn.functional.linear(input, weight, bias)


def fuse(parts: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
    """The sections' kept rows stacked back into one fused tensor (None without biases)."""
    return None if parts[0] is None else torch.cat(list(parts))
