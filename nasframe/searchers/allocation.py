"""Turn per-hparam sensitivities into a config that meets one budget.

The threshold allocation is the seed's binary search: one degradation threshold for every
hparam; each hparam keeps its smallest size whose degradation stays within the threshold.
Degradations are made monotone (pruning more never looks better than pruning less), so a
larger threshold never keeps more of anything and the cost falls as the threshold rises.
The search runs over the sorted distinct degradation values rather than over a float range:
it is exact and independent of the scores' scale (1e-12 or 1e12 search the same).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

Sensitivity = Mapping[str, Mapping[int, float]]


def monotone_degradation(per_choice: Mapping[int, float]) -> dict[int, float]:
    """Running maximum from the largest size down, so smaller sizes never degrade less.

    The full size degrades by 0 by definition (a noisy measurement there must not make the
    full model look unaffordable), so every value is >= 0.
    """
    result: dict[int, float] = {}
    worst = 0.0
    for index, choice in enumerate(sorted(per_choice, reverse=True)):
        if index > 0:
            value = per_choice[choice]
            # A NaN score (the pruned model diverged) is the worst degradation, never none.
            worst = math.inf if math.isnan(value) else max(worst, value)
        result[choice] = worst
    return result


def config_at_threshold(
    monotone: Mapping[str, Mapping[int, float]], threshold: float
) -> dict[str, int]:
    return {
        name: min(c for c, degradation in per_choice.items() if degradation <= threshold)
        for name, per_choice in monotone.items()
    }


def threshold_allocation(
    sensitivity: Sensitivity,
    cost: Callable[[Mapping[str, int]], float],
    limit: float,
) -> dict[str, int]:
    """The config at the smallest threshold whose cost is within ``limit``.

    ``sensitivity[name][choice]`` is the degradation of keeping ``choice`` units of ``name``
    (0 at full size). Raises ValueError if even the largest threshold exceeds the limit.
    """
    monotone = {name: monotone_degradation(per_choice) for name, per_choice in sensitivity.items()}
    degradations = {d for per_choice in monotone.values() for d in per_choice.values()}
    # Sizes whose score was not finite are never chosen: no threshold reaches them.
    thresholds = sorted({0.0} | {d for d in degradations if math.isfinite(d)})
    if cost(config_at_threshold(monotone, thresholds[-1])) > limit:
        raise ValueError("the constraint cannot be met even at the largest threshold")
    low, high = 0, len(thresholds) - 1  # invariant: thresholds[high] meets the limit
    while low < high:
        middle = (low + high) // 2
        if cost(config_at_threshold(monotone, thresholds[middle])) <= limit:
            high = middle
        else:
            low = middle + 1
    return config_at_threshold(monotone, thresholds[high])


_LAYER_INDEX = re.compile(r"(?<=\.)\d+(?=\.)")


def uniform_groups(
    names: list[str], full_sizes: Mapping[str, int] | None = None
) -> dict[str, list[str]]:
    """Hparams that differ only in a layer index (``model.layers.3.mlp.intermediate_size``),
    grouped under a pattern (``model.layers.*.mlp.intermediate_size``).

    Layers whose full sizes differ are no uniform family (no plain config makes them equal):
    with ``full_sizes`` given, each such hparam stays a group of its own.
    """
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(_LAYER_INDEX.sub("*", name), []).append(name)
    if full_sizes is None:
        return groups
    split: dict[str, list[str]] = {}
    for pattern, members in groups.items():
        if len({full_sizes[m] for m in members}) == 1:
            split[pattern] = members
        else:
            split.update({m: [m] for m in members})
    return split


def smallest_uniform(sensitivity: Sensitivity, full_sizes: Mapping[str, int]) -> dict[str, int]:
    """The smallest config a uniform allocation can reach: each group at its smallest size
    all of its layers allow."""
    config: dict[str, int] = {}
    for members in uniform_groups(list(sensitivity), full_sizes).values():
        common = set.intersection(*(set(sensitivity[m]) for m in members))
        config.update({m: min(common) for m in members})
    return config


Allocation = Callable[[Sensitivity, Callable[[Mapping[str, int]], float], float], dict[str, int]]


def uniform_allocation(
    sensitivity: Sensitivity,
    cost: Callable[[Mapping[str, int]], float],
    limit: float,
    full_sizes: Mapping[str, int] | None = None,
    allocate: Allocation = threshold_allocation,
) -> dict[str, int]:
    """``allocate`` (the threshold allocation by default) with one size per group of
    per-layer hparams.

    A group's degradation at a size is the sum of its members' (each layer keeps its own most
    important units); only sizes every member allows are candidates. The result has the same
    sizes in every layer, which is what a plain transformers config can express. The result
    is then grown back towards the limit (:func:`fill_to_limit`), so a coarse group step does
    not leave budget unused.
    """
    groups = uniform_groups(list(sensitivity), full_sizes)
    grouped: dict[str, dict[int, float]] = {}
    for pattern, members in groups.items():
        common = set.intersection(*(set(sensitivity[m]) for m in members))
        grouped[pattern] = {c: sum(sensitivity[m][c] for m in members) for c in common}

    grouped_cost = _GroupedCost(cost, groups)
    return grouped_cost.expand(_least_damage_filled(grouped, grouped_cost, limit, allocate))


def _least_damage_filled(
    sensitivity: Sensitivity,
    cost: Callable[[Mapping[str, int]], float],
    limit: float,
    allocate: Allocation,
) -> dict[str, int]:
    """The allocation filled to the limit, or, when one of its groups kept one step more
    (the others allocated around it and filled) degrades less, that one.

    A coarse step (a whole layer) taken last can overshoot the limit by far more than a finer
    step elsewhere would have: each alternative keeps one group a step larger, so the finer
    steps get their chance. Raises ValueError as ``allocate`` does.
    """
    monotone = {name: monotone_degradation(per_choice) for name, per_choice in sensitivity.items()}

    def rank(config: Mapping[str, int]) -> tuple[float, float]:
        return sum(monotone[name][size] for name, size in config.items()), -cost(config)

    best = fill_to_limit(sensitivity, cost, limit, allocate(sensitivity, cost, limit))
    first = dict(best)
    for name, per_choice in sensitivity.items():
        floor = next((c for c in sorted(per_choice) if c > first[name]), None)
        if floor is None:
            continue
        kept = {**sensitivity, name: {c: d for c, d in per_choice.items() if c >= floor}}
        try:
            other = fill_to_limit(kept, cost, limit, allocate(kept, cost, limit))
        except ValueError:  # a step larger there leaves no config within the limit
            continue
        if rank(other) < rank(best):
            best = other
    return best


def fill_to_limit(
    sensitivity: Sensitivity,
    cost: Callable[[Mapping[str, int]], float],
    limit: float,
    config: Mapping[str, int],
) -> dict[str, int]:
    """``config`` grown one allowed size at a time while the cost stays within ``limit``: the
    step that undoes the most degradation per unit of cost first, until no hparam can grow.

    A uniform group's step is every layer at once, and steps interact (removing a layer makes
    the FFN width it had free to grow back), so an allocation that stops at the first config
    within the limit can leave far more than one step of the budget unused. After this pass
    no single step fits, so the cost is within the smallest step still open of the limit.
    """
    monotone = {name: monotone_degradation(per_choice) for name, per_choice in sensitivity.items()}
    choices = {name: sorted(per_choice) for name, per_choice in sensitivity.items()}
    config = dict(config)
    current = cost(config)
    while True:
        best: tuple[tuple[float, float, str], int, float] | None = None
        for name, sizes in choices.items():
            size = next((c for c in sizes if c > config[name]), None)
            if size is None:
                continue
            grown = cost({**config, name: size})
            if grown > limit:
                continue
            gain = monotone[name][config[name]] - monotone[name][size]
            added = grown - current
            ratio = math.inf if added <= 0 else (gain / added if gain == gain else 0.0)
            key = (-ratio, added, name)  # best value first, then the finer step
            if best is None or key < best[0]:
                best = (key, size, grown)
        if best is None:
            return config
        (_, _, name), size, current = best
        config[name] = size


@dataclass(frozen=True)
class _GroupedCost:
    """``cost`` of a config over groups (each pattern's size given to all its members), with
    the inner cost's sweep passed through when it has one."""

    cost: Callable[[Mapping[str, int]], float]
    groups: Mapping[str, list[str]]

    def expand(self, config: Mapping[str, int]) -> dict[str, int]:
        return {m: size for pattern, size in config.items() for m in self.groups[pattern]}

    def __call__(self, config: Mapping[str, int]) -> float:
        return self.cost(self.expand(config))

    def along(
        self, config: Mapping[str, int], names: Sequence[str], sizes: Sequence[int]
    ) -> list[float]:
        expanded = self.expand(config)
        members = [m for pattern in names for m in self.groups[pattern]]
        along = getattr(self.cost, "along", None)
        if along is not None:
            return along(expanded, members, sizes)
        return [self.cost({**expanded, **dict.fromkeys(members, size)}) for size in sizes]
