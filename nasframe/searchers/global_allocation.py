"""Cost-aware global allocation: remove the cheapest damage per unit of cost first.

The threshold allocation gives every hparam the same degradation threshold, whatever its
units cost: an FFN neuron and a hidden channel are pruned to the same damage although a hidden
channel carries a hundred times more parameters. The global allocation ranks every *step* of
every hparam (from one allowed size to the next smaller one) by its degradation per unit of
cost saved and takes the cheapest steps first until the constraint is met: the greedy solution
of a knapsack.

Each hparam's steps are taken along the lower convex hull of its (cost saved, degradation)
curve, so an hparam is never blocked by one expensive step in front of cheap ones, and its
steps are taken in order. When costs add up across hparams (no two hparams share a weight) the
greedy path is optimal at every point it passes through. Where they do not (the hidden size
multiplies every projection's cost), costs are linearised around the current config and the
greedy pass is repeated around its own result, keeping the feasible config of least total
degradation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from nasframe.searchers.allocation import Sensitivity, monotone_degradation

#: Greedy passes at most; each re-linearises the costs around the previous result.
ROUNDS = 6


@dataclass(frozen=True, order=True)
class Step:
    """Prune ``name`` from ``start`` to ``end`` units: ``damage`` more degradation for
    ``saved`` less cost (both > 0 except for free steps)."""

    ratio: float
    name: str
    start: int
    end: int
    damage: float
    saved: float


def global_allocation(
    sensitivity: Sensitivity,
    cost: Callable[[Mapping[str, int]], float],
    limit: float,
    rounds: int = ROUNDS,
) -> dict[str, int]:
    """The config of least total degradation the greedy finds within ``limit``.

    ``sensitivity[name][choice]`` is the degradation of keeping ``choice`` units (0 at full
    size); every choice listed may be chosen, so a caller enforces a minimum kept per hparam
    by leaving smaller choices out. Raises ValueError when no config of finite degradation
    meets the limit.
    """
    monotone = {name: monotone_degradation(per_choice) for name, per_choice in sensitivity.items()}
    usable = {
        name: sorted((c for c, d in per_choice.items() if math.isfinite(d)), reverse=True)
        for name, per_choice in monotone.items()
    }
    smallest = {name: choices[-1] for name, choices in usable.items()}
    if cost(smallest) > limit:
        raise ValueError("the constraint cannot be met even with every hparam at its smallest")
    full = {name: choices[0] for name, choices in usable.items()}
    if cost(full) <= limit:
        return full

    def damage(config: Mapping[str, int]) -> float:
        return sum(monotone[name][size] for name, size in config.items())

    anchor, best, seen = full, None, []
    for _ in range(max(1, rounds)):
        steps = sorted(
            step
            for name, choices in usable.items()
            for step in hull_steps(name, choices, monotone[name], cost, anchor)
        )
        found = greedy_prefix(steps, full, cost, limit, usable)
        if best is None or damage(found) < damage(best):
            best = found
        if found in seen:
            break
        seen.append(found)
        anchor = found
    return best


def hull_steps(
    name: str,
    choices: list[int],
    degradation: Mapping[int, float],
    cost: Callable[[Mapping[str, int]], float],
    anchor: Mapping[str, int],
) -> list[Step]:
    """``name``'s steps along the lower convex hull of (cost saved, degradation), the costs
    taken with every other hparam as in ``anchor``; in order of increasing ratio."""
    costs = costs_along(cost, anchor, [name], choices)
    base = costs[0]
    points = [(0.0, 0.0, choices[0])]
    for choice, cost_there in zip(choices[1:], costs[1:], strict=True):
        saved = base - cost_there
        # A size that saves nothing more than a larger one is never worth taking.
        if saved > points[-1][0]:
            points.append((saved, degradation[choice], choice))
    hull = [points[0]]
    for point in points[1:]:
        while len(hull) >= 2 and _not_below(hull[-2], hull[-1], point):
            hull.pop()
        hull.append(point)
    steps = []
    for (saved_a, deg_a, start), (saved_b, deg_b, end) in zip(hull, hull[1:], strict=False):
        extra_damage, extra_saved = deg_b - deg_a, saved_b - saved_a
        steps.append(Step(extra_damage / extra_saved, name, start, end, extra_damage, extra_saved))
    return steps


def _not_below(a: tuple, b: tuple, c: tuple) -> bool:
    """Whether ``b`` lies on or above the segment from ``a`` to ``c`` (so the lower hull
    skips it)."""
    (xa, ya, _), (xb, yb, _), (xc, yc, _) = a, b, c
    return (yb - ya) * (xc - xa) >= (yc - ya) * (xb - xa)


def greedy_prefix(
    steps: list[Step],
    full: Mapping[str, int],
    cost: Callable[[Mapping[str, int]], float],
    limit: float,
    usable: Mapping[str, list[int]],
) -> dict[str, int]:
    """The config after the shortest prefix of ``steps`` that meets ``limit``, its last step
    stopped at the largest size in its range that already meets it.

    Every step makes one hparam smaller, so the cost never rises along the steps and the
    prefix is found by bisection.
    """

    def after(count: int) -> dict[str, int]:
        # Replayed on demand: holding the config after every step would keep (steps x
        # hparams) entries, which grows with the model.
        config = dict(full)
        for step in steps[:count]:
            config[step.name] = step.end
        return config

    low, high = 0, len(steps)  # invariant: after(high) meets the limit
    if cost(after(high)) > limit:
        # Linearised costs can order the steps so that the smallest sizes are not all
        # reached; fall back to every hparam at its smallest (known to meet the limit).
        return {name: choices[-1] for name, choices in usable.items()}
    while low < high:
        middle = (low + high) // 2
        if cost(after(middle)) <= limit:
            high = middle
        else:
            low = middle + 1
    if high == 0:
        return after(0)
    last = steps[high - 1]
    before = after(high - 1)
    for size in usable[last.name]:
        if last.end <= size < last.start and cost({**before, last.name: size}) <= limit:
            return {**before, last.name: size}
    return after(high)


def costs_along(
    cost: Callable[[Mapping[str, int]], float],
    config: Mapping[str, int],
    names: list[str],
    sizes: list[int],
) -> list[float]:
    """The cost of ``config`` with every hparam in ``names`` set to each of ``sizes``: the
    cost function's own sweep when it has one (a :class:`nasframe.cost.cost_model.
    CostFunction` recounts only what those hparams index), else one call per size."""
    along = getattr(cost, "along", None)
    if along is not None:
        return along(config, names, sizes)
    return [cost({**config, **dict.fromkeys(names, size)}) for size in sizes]
