"""Magnitude importance: a unit matters as much as the weights it owns."""

from __future__ import annotations

import torch

from nasframe.space.hparam import Hparam
from nasframe.space.search_space import SearchSpace


@torch.no_grad()
def l1_importance(space: SearchSpace, hparam: Hparam) -> torch.Tensor:
    """Sum of |w| over every parameter element each unit of ``hparam`` owns.

    A hidden FFN neuron owns its row (and bias) in the up projection and its column in the
    down projection; a tied dimension sums over every module that shares it (shared
    parameters counted once); a layer owns all of its weights.
    """
    scores = torch.zeros(hparam.max, dtype=torch.float64)
    for _, module, slot in space.slots_of(hparam):
        units = module.unit_modules(slot)
        for position, unit in enumerate(units or ()):
            # A layer owns every weight in it.
            scores[position] += sum(
                float(p.detach().abs().double().sum()) for p in unit.parameters()
            )
    for param, slot_dim in space.owned_parameter_dims(hparam):
        per_element = param.detach().abs().double()
        other_dims = [d for d in range(param.dim()) if d != slot_dim.dim]
        if other_dims:
            per_element = per_element.sum(dim=other_dims)
        # The dimension is laid out as (groups, units, unit_size); see SlotDim.
        per_unit = per_element.reshape(slot_dim.groups, hparam.max, slot_dim.unit_size)
        scores += per_unit.sum(dim=(0, 2)).cpu()
    return scores.float()
