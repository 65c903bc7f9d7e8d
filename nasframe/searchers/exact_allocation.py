"""The allocation of least total degradation within the limit: exact wherever the cost splits.

:class:`nasframe.searchers.interactions.CostSplit` splits the hparams into *hubs* (hidden
size, depth) and small components independent once the hubs are fixed (a layer's KV groups
and heads per group; each FFN width). Per combination of hub sizes the rest is a multiple-
choice knapsack over the components' Pareto frontiers of (cost saved, damage). Its Lagrangian
bound (the linear relaxation, from the frontiers' convex hulls) orders the combinations and
skips those that cannot beat the best found; the others are solved exactly once the bound's
reduced costs have removed every size that cannot be in a better solution: by merging Pareto
sets, or with HiGHS (``scipy.optimize.milp``, gap 0) where the merge grows too large. This is
the optimum (so a looser budget never does more damage) whenever the split is exact: always
for nasframe's cost functions, which list their terms; for other callables when the probes
found every interaction. With too many hub combinations, hub sizes are searched on a coarse
grid and refined hub by hub: the result is then optimal for the hub sizes settled on only.
The result is checked with the true cost, compared with the threshold allocation's (and, if
it missed the limit, the global one's), and grown back towards the limit (fill_to_limit).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from nasframe.searchers.allocation import (
    Sensitivity,
    fill_to_limit,
    monotone_degradation,
    threshold_allocation,
)
from nasframe.searchers.global_allocation import global_allocation
from nasframe.searchers.interactions import CostSplit

#: Hub combinations enumerated at most; beyond (or beyond the table entries
#: :data:`nasframe.searchers.interactions.MAX_ENTRIES`) the hub sizes are searched on a coarse
#: grid and refined hub by hub.
MAX_COMBINATIONS = 4096
#: Refinement passes over the hubs at most.
DESCENT_ROUNDS = 8
#: Partial solutions a Pareto merge may hold before the knapsack goes to HiGHS instead.
MERGE_STATES = 200_000
#: Cost kept free below the limit (relative), against rounding in sums of float costs.
COST_MARGIN = 1e-12


def exact_allocation(
    sensitivity: Sensitivity,
    cost: Callable[[Mapping[str, int]], float],
    limit: float,
    max_combinations: int = MAX_COMBINATIONS,
) -> dict[str, int]:
    """The config of least total (monotone) degradation whose cost is within ``limit``.

    ``sensitivity[name][choice]`` is the degradation of keeping ``choice`` units (0 at full
    size); every finite choice listed may be chosen. Never more damage than the threshold
    allocation on the same inputs. Raises ValueError when no config of finite degradation
    meets the limit.
    """
    monotone = {name: monotone_degradation(per_choice) for name, per_choice in sensitivity.items()}
    usable = {
        name: sorted(c for c, d in per_choice.items() if math.isfinite(d))
        for name, per_choice in monotone.items()
    }
    if cost({name: sizes[0] for name, sizes in usable.items()}) > limit:
        raise ValueError("the constraint cannot be met even with every hparam at its smallest")
    full = {name: sizes[-1] for name, sizes in usable.items()}
    if cost(full) <= limit:
        return full

    def damage(config: Mapping[str, int]) -> float:
        return sum(monotone[name][size] for name, size in config.items())

    threshold = threshold_allocation(sensitivity, cost, limit)
    found = _Search(monotone, usable, cost, limit, max_combinations).run(threshold)
    if found is None or cost(found) > limit:  # an interaction the probes missed
        found = global_allocation(sensitivity, cost, limit)
    best = min((found, threshold), key=lambda c: (damage(c), -cost(c)))
    return fill_to_limit(sensitivity, cost, limit, best)


@dataclass(frozen=True)
class _Frontier:
    """One component's Pareto frontier under some hub sizes: its joint sizes (``items``) in
    order of strictly more cost saved and strictly more damage, and the steps along the
    lower convex hull (``ends`` the frontier index each step reaches)."""

    savings: np.ndarray
    damage: np.ndarray
    items: np.ndarray
    ratios: np.ndarray
    gains: np.ndarray
    ends: np.ndarray
    integral: bool  # whole savings (parameters, FLOPs): sums of them are exact

    @classmethod
    def of(cls, savings: np.ndarray, damage: np.ndarray) -> _Frontier:
        # Least damage first, then most saved, then the larger joint sizes (later in order).
        order = np.lexsort((-np.arange(len(savings)), -savings, damage))
        ranked = savings[order]
        before = np.concatenate(([-np.inf], np.maximum.accumulate(ranked)[:-1]))
        items = order[ranked > before]
        s, d = savings[items], damage[items]
        hull = [0]
        for j in range(1, len(s)):
            while len(hull) >= 2 and (d[hull[-1]] - d[hull[-2]]) * (s[j] - s[hull[-1]]) >= (
                d[j] - d[hull[-1]]
            ) * (s[hull[-1]] - s[hull[-2]]):
                hull.pop()
            hull.append(j)
        hull = np.asarray(hull)
        gains, losses = np.diff(s[hull]), np.diff(d[hull])
        integral = bool(np.all(s == np.round(s)) and np.all(np.abs(s) < 2**52))
        return cls(s, d, items, losses / gains, gains, hull[1:], integral)


@dataclass(frozen=True)
class _Bound:
    """The Lagrangian bound at the relaxation's critical ratio ``ratio`` and the greedy
    solution that takes the critical step whole (frontier index per component)."""

    lower: float
    ratio: float
    greedy: np.ndarray
    greedy_damage: float


def _need(constant: float, limit: float, integral: bool) -> float:
    """The cost the components must save: exact for whole costs (a whole cost is within the
    limit when it is within its floor), with a margin against rounding otherwise."""
    if integral and float(constant).is_integer() and abs(constant) < 2**52:
        return constant - math.floor(limit)
    return constant - limit + COST_MARGIN * (abs(constant) + abs(limit))


def _bound(frontiers: Sequence[_Frontier], need: float) -> _Bound | None:
    """None when even every component at its most saving size saves less than ``need``."""
    if not frontiers:
        return _Bound(0.0, 0.0, np.zeros(0, int), 0.0) if need <= 0 else None
    first = np.array([f.savings[0] for f in frontiers])
    greedy = np.zeros(len(frontiers), dtype=int)
    ratio = 0.0
    rest = need - first.sum()
    if rest > 0:
        ratios = np.concatenate([f.ratios for f in frontiers])
        order = np.argsort(ratios, kind="stable")
        gains = np.cumsum(np.concatenate([f.gains for f in frontiers])[order])
        k = int(np.searchsorted(gains, rest))
        if k == len(gains):
            return None
        ratio = float(ratios[order[k]])
        owners = np.concatenate([np.full(len(f.ends), i) for i, f in enumerate(frontiers)])
        ends = np.concatenate([f.ends for f in frontiers])
        np.maximum.at(greedy, owners[order[: k + 1]], ends[order[: k + 1]])
    lower = ratio * need + sum(float(np.min(f.damage - ratio * f.savings)) for f in frontiers)
    greedy_damage = float(sum(f.damage[g] for f, g in zip(frontiers, greedy, strict=True)))
    return _Bound(lower, ratio, greedy, greedy_damage)


def _solve(
    frontiers: Sequence[_Frontier], need: float, bound: _Bound, below: float
) -> tuple[float, list[int]] | None:
    """The least damage that saves ``need``, if below ``below``: each component's sizes whose
    reduced cost already lifts the bound to ``below`` are left out, then the rest is solved
    exactly (frontier index per component)."""
    slack = below - bound.lower + 1e-9 * max(1.0, abs(below))
    groups = []
    for f in frontiers:
        reduced = f.damage - bound.ratio * f.savings
        groups.append(np.flatnonzero(reduced - reduced.min() <= slack))
    picked = _merge(frontiers, groups, need, below)
    if picked is None:
        return None
    return float(sum(f.damage[j] for f, j in zip(frontiers, picked, strict=True))), picked


def _merge(
    frontiers: Sequence[_Frontier], groups: list[np.ndarray], need: float, below: float
) -> list[int] | None:
    """Exact: Pareto sets of (saved, damage) merged one component at a time, states that can
    no longer save ``need`` or stay below ``below`` dropped; HiGHS when they grow too large."""
    savings = [f.savings[g] for f, g in zip(frontiers, groups, strict=True)]
    damage = [f.damage[g] for f, g in zip(frontiers, groups, strict=True)]
    more = np.concatenate((np.cumsum([s.max() for s in savings][::-1])[::-1], [0.0]))
    least = np.concatenate((np.cumsum([d.min() for d in damage][::-1])[::-1], [0.0]))
    saved, hurt, trail = np.zeros(1), np.zeros(1), []
    for g, (s, d) in enumerate(zip(savings, damage, strict=True)):
        if len(saved) * len(s) > MERGE_STATES:
            return _milp(savings, damage, groups, need)
        s2, d2 = (saved[:, None] + s).ravel(), (hurt[:, None] + d).ravel()
        ok = np.flatnonzero((s2 + more[g + 1] >= need) & (d2 + least[g + 1] < below))
        if len(ok) == 0:
            return None
        s2, d2 = np.minimum(s2[ok], need), d2[ok]  # saving more than needed is worth nothing
        order = np.lexsort((d2, -s2))
        ranked = d2[order]
        keep = np.concatenate(([True], ranked[1:] < np.minimum.accumulate(ranked)[:-1]))
        kept = ok[order[keep]]
        saved, hurt = s2[order[keep]], d2[order[keep]]
        trail.append((kept // len(s), kept % len(s)))
    state, picked = int(np.argmin(hurt)), []
    for parents, items in reversed(trail):
        picked.append(int(items[state]))
        state = int(parents[state])
    return [int(group[j]) for group, j in zip(groups, reversed(picked), strict=True)]


def _milp(
    savings: list[np.ndarray], damage: list[np.ndarray], groups: list[np.ndarray], need: float
) -> list[int] | None:
    """The same knapsack with HiGHS (binary choice per size, one per component)."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_array, vstack

    sizes = [len(s) for s in savings]
    columns = np.arange(sum(sizes))
    rows = np.repeat(np.arange(len(sizes)), sizes)
    one_each = coo_array((np.ones(len(columns)), (rows, columns)))
    objective = np.concatenate(damage)
    objective = objective * (1e3 / max(float(objective.max()), 1e-300))
    saved = np.concatenate(savings)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    target = need
    for _ in range(3):  # HiGHS's feasibility tolerance can round a choice over the limit
        result = milp(
            objective,
            integrality=np.ones(len(columns)),
            bounds=Bounds(0, 1),
            constraints=LinearConstraint(
                vstack([one_each, saved[None, :]]),
                np.concatenate((np.ones(len(sizes)), [target])),
                np.concatenate((np.ones(len(sizes)), [np.inf])),
            ),
            options={"mip_rel_gap": 0.0},
        )
        if result.x is None:
            return None
        picked = [int(np.argmax(result.x[a : a + n])) for a, n in zip(starts, sizes, strict=True)]
        total = sum(float(s[j]) for s, j in zip(savings, picked, strict=True))
        if total >= need:
            return [int(group[j]) for group, j in zip(groups, picked, strict=True)]
        target += 2 * (need - total)
    return None


class _Search:
    """The hub combinations of one allocation problem and the knapsack behind each."""

    def __init__(
        self,
        monotone: Mapping[str, Mapping[int, float]],
        usable: Mapping[str, list[int]],
        cost: Callable[[Mapping[str, int]], float],
        limit: float,
        max_combinations: int,
    ) -> None:
        self.monotone, self.usable, self.limit = monotone, usable, limit
        self.split = split = CostSplit(
            cost, usable, {n: s[-1] for n, s in usable.items()}, max_combinations=max_combinations
        )
        self.damages = [
            np.array([sum(monotone[n][s] for n, s in zip(c, sizes, strict=True)) for sizes in j])
            for c, j in zip(split.components, split.joint, strict=True)
        ]
        self.frontiers: dict[tuple[int, object], _Frontier] = {}

    def run(self, start: Mapping[str, int]) -> dict[str, int] | None:
        """The best config over every hub combination; when they are too many, over a coarse
        grid of hub sizes (which includes ``start``'s) refined one hub at a time: each hub's
        sizes around its best (all of them where they fit) with the others at theirs."""
        hubs = self.split.hubs
        grid = {hub: list(self.usable[hub]) for hub in hubs}
        if self.split.fits(grid):
            found = self.best_over(grid)
            return None if found is None else found[1]
        grid = self.split.thinned(grid, start)
        best, tried = self.best_over(grid), set()
        for _ in range(DESCENT_ROUNDS):
            searched = False
            for hub in hubs if best is not None else ():
                chosen = best[1]
                trial = {h: [chosen[h]] for h in hubs}
                window = self.usable[hub]
                if not self.split.fits({**trial, hub: window}):
                    at = grid[hub].index(chosen[hub])
                    low, high = (
                        grid[hub][max(at - 1, 0)],
                        grid[hub][min(at + 1, len(grid[hub]) - 1)],
                    )
                    window = [size for size in window if low <= size <= high]
                trial = self.split.thinned({**trial, hub: window}, chosen)
                key = (hub, tuple(chosen[h] for h in hubs if h != hub), tuple(trial[hub]))
                if key in tried:
                    continue
                tried.add(key)
                searched = True
                grid[hub] = sorted(set(grid[hub]) | set(trial[hub]))
                found = self.best_over(trial)
                if found is not None and found[0] < best[0]:
                    best = found
            if not searched:
                break
        return None if best is None else best[1]

    def frontier(self, index: int, hubs: Mapping[str, int]) -> _Frontier | None:
        key = (index, self.split.key(index, hubs))
        if key[1] is None:
            return None
        if key not in self.frontiers:
            savings = self.split.savings(index, hubs)
            self.frontiers[key] = _Frontier.of(savings, self.damages[index])
        return self.frontiers[key]

    def best_over(self, grid: Mapping[str, Sequence[int]]) -> tuple[float, dict[str, int]] | None:
        """The least damage (and its config) over every combination of ``grid``'s sizes."""
        names = list(grid)
        combos = list(itertools.product(*(grid[name] for name in names)))
        problems = []
        for combo, constant in zip(combos, self.split.constants(names, combos), strict=True):
            hubs = dict(zip(names, combo, strict=True))
            hub_damage = sum(self.monotone[h][s] for h, s in hubs.items())
            opened = [
                (i, f)
                for i in range(len(self.split.components))
                if (f := self.frontier(i, hubs)) is not None
            ]
            need = _need(constant, self.limit, all(f.integral for _, f in opened))
            bound = _bound([f for _, f in opened], need)
            if bound is not None:
                problems.append((hub_damage + bound.lower, hub_damage, hubs, opened, need, bound))
        if not problems:
            return None
        first = min(problems, key=lambda p: p[1] + p[5].greedy_damage)
        best = (first[1] + first[5].greedy_damage, first[2], first[3], list(first[5].greedy))
        for lower, hub_damage, hubs, opened, need, bound in sorted(problems, key=lambda p: p[0]):
            if lower >= best[0]:
                break
            solved = _solve([f for _, f in opened], need, bound, best[0] - hub_damage)
            if solved is not None and hub_damage + solved[0] < best[0]:
                best = (hub_damage + solved[0], hubs, opened, solved[1])
        _, hubs, opened, picked = best
        config = {**self.split.base, **hubs}
        for (index, f), j in zip(opened, picked, strict=True):
            sizes = self.split.joint[index][int(f.items[j])]
            config.update(zip(self.split.components[index], sizes, strict=True))
        return best[0], config
