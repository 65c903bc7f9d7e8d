"""From measured sensitivities to sizes that meet the constraint.

The binary search measures how much each allowed size of each hparam degrades the score;
:class:`Allocator` turns those sensitivities into one size per hparam under the cost limit:
normalise them (``normalize``), drop the sizes below ``min_keep``, check that the smallest
sub-network fits at all (a clear error naming the floor otherwise), then run the chosen
allocation (:data:`ALLOCATIONS`), per group of layers when the search is ``uniform``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nasframe.cost.cost_model import CostModel
from nasframe.errors import InfeasibleConstraintError, UserInputError
from nasframe.searchers.allocation import (
    Allocation,
    Sensitivity,
    smallest_uniform,
    threshold_allocation,
    uniform_allocation,
)
from nasframe.searchers.exact_allocation import exact_allocation
from nasframe.searchers.global_allocation import global_allocation
from nasframe.searchers.normalization import NORMALIZATIONS, normalize_sensitivity
from nasframe.space.search_space import Config, SearchSpace

if TYPE_CHECKING:
    from nasframe.searchers.config import BinarySearchConfig

#: How sensitivities become sizes: one degradation threshold for every hparam, the
#: cost-aware greedy that removes the least damage per unit of cost first, or the least total
#: damage within the limit, solved exactly where the cost splits (multiple-choice knapsacks).
ALLOCATIONS: dict[str, Allocation] = {
    "threshold": threshold_allocation,
    "global": global_allocation,
    "exact": exact_allocation,
}


def check_allocation_settings(allocation: Any, normalize: Any, min_keep: Any) -> None:
    """One clear error for a bad ``allocation``, ``normalize`` or ``min_keep`` value."""
    for key, value, valid in (
        ("allocation", allocation, tuple(ALLOCATIONS)),
        ("normalize", normalize, NORMALIZATIONS),
    ):
        if value not in valid:
            raise UserInputError(f"{key} must be one of {', '.join(valid)}, got {value!r}.")
    if (
        isinstance(min_keep, bool)
        or not isinstance(min_keep, int | float)
        or not 0 <= min_keep <= 1
    ):
        raise UserInputError(
            f"min_keep must be a fraction of each hparam's size in [0, 1], got {min_keep!r}."
        )


@dataclass(frozen=True)
class Allocator:
    """Allocates sizes for one search: its space, cost model, settings and algorithm name
    (which the errors name)."""

    space: SearchSpace
    cost_model: CostModel
    settings: BinarySearchConfig
    algorithm: str

    def allocate(self, sensitivity: Sensitivity, kind: str, limit: float) -> Config:
        """Sizes for the hparams in ``sensitivity`` whose ``kind`` cost meets ``limit`` (the
        others stay at full size); InfeasibleConstraintError when no allowed sizes do."""
        settings = self.settings
        cost = self.cost_model.cost_fn(kind)
        sensitivity = self.allowed_sensitivity(
            normalize_sensitivity(sensitivity, settings.normalize)
        )
        smallest = cost({name: min(per_choice) for name, per_choice in sensitivity.items()})
        if smallest > limit:
            original = cost(self.space.max_config())
            floor = (
                f" keeping at least {settings.min_keep:.0%} of each (min_keep)"
                if settings.min_keep > 0
                else ""
            )
            raise InfeasibleConstraintError(
                f"{self.algorithm} can only prune {len(sensitivity)} of "
                f"{len(self.space.hparams)} hparams{floor}, whose smallest sub-network has "
                f"{smallest:,.0f} {kind} ({100 * smallest / original:.1f}% of the original), "
                f"above the limit {limit:,.0f}; relax the constraint to at least that."
            )
        allocate = ALLOCATIONS[settings.allocation]
        if settings.uniform:
            full_sizes = {name: self.space.hparams[name].max for name in sensitivity}
            uniform_floor = cost(smallest_uniform(sensitivity, full_sizes))
            if uniform_floor > limit:
                original = cost(self.space.max_config())
                raise InfeasibleConstraintError(
                    f"with the same sizes in every layer (uniform) the smallest sub-network has "
                    f"{uniform_floor:,.0f} {kind} ({100 * uniform_floor / original:.1f}% of the "
                    f"original), above the limit {limit:,.0f}; relax the constraint to at least "
                    "that or search without --uniform."
                )
            per_layer = allocate

            def allocate(sens, cost_fn, lim):
                return uniform_allocation(sens, cost_fn, lim, full_sizes, per_layer)

        try:
            return allocate(sensitivity, cost, limit)
        except ValueError:
            raise InfeasibleConstraintError(
                f"only sizes whose score was not finite (NaN or Inf) would meet the limit "
                f"{limit:,.0f} {kind}; relax the constraint or check score_func."
            ) from None

    def allowed_sensitivity(self, sensitivity: Sensitivity) -> dict[str, dict[int, float]]:
        """``sensitivity`` without the sizes below ``min_keep`` of each hparam's full size
        (the full size always stays)."""
        keep = self.settings.min_keep
        allowed = {}
        for name, per_choice in sensitivity.items():
            full = self.space.hparams[name].max
            floor = math.ceil(keep * full - 1e-9)  # <= full, since min_keep <= 1
            allowed[name] = {c: d for c, d in per_choice.items() if c >= floor}
        return allowed
