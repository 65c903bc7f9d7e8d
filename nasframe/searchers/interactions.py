"""How a cost splits: which hparams' costs interact, a few *hubs* that interact with many, and
small components that interact with nothing else once the hubs are fixed.

A cost is a sum of terms, each a function of a few hparams (a parameter's count multiplies the
sizes of the hparams that index it, and it exists only while its layer is kept). Two hparams
interact when they share a term. nasframe's own cost functions list their terms
(:meth:`nasframe.cost.cost_model.CostFunction.interacting`); any other callable is probed: ``a``
and ``b`` interact when ``cost(a small, b small) - cost(a small) - cost(b small) + cost(full)``
is not zero (at two probe points). Removing the hparams with the most neighbours (the hidden
size multiplies every projection, the depth gates every layer) until every remaining connected
component has few joint sizes turns the allocation into one small problem per hub combination:
the cost is a constant plus one table per component. A component's table depends only on the
hubs it shares a term with, and on a gating hub (the depth) only through whether its layer is
kept, so tables are shared between hub combinations (:meth:`CostSplit.key`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Hashable, Mapping, Sequence

import numpy as np

from nasframe.cost.cost_model import Interaction
from nasframe.searchers.global_allocation import costs_along

Cost = Callable[[Mapping[str, int]], float]

#: A component is split further (by removing another hub) while its joint sizes exceed this.
MAX_JOINT = 1024
#: Table entries (components' joint sizes x the hub sizes their tables depend on) a grid of
#: hub sizes may need at most (:meth:`CostSplit.fits`).
MAX_ENTRIES = 300_000
#: Relative size of a second difference that counts as an interaction when probing.
PROBE_TOLERANCE = 1e-9


def probed_interactions(cost: Cost, usable: Mapping[str, Sequence[int]]) -> list[Interaction]:
    """Pairs whose cost is not additive at the smallest and at a middle size of each (every
    other hparam at full size): n^2 / 2 evaluations per probe point."""
    names = [name for name, sizes in usable.items() if len(sizes) > 1]
    full = {name: sizes[-1] for name, sizes in usable.items()}
    base = cost(full)
    pairs: set[frozenset[str]] = set()
    for pick in (0, None):
        low = {n: usable[n][0 if pick == 0 else (len(usable[n]) - 1) // 2] for n in names}
        single = {n: cost({**full, n: low[n]}) for n in names}
        for a, b in itertools.combinations(names, 2):
            joint = cost({**full, a: low[a], b: low[b]})
            scale = max(abs(base), abs(joint), abs(single[a]), abs(single[b]))
            if abs(joint - single[a] - single[b] + base) > PROBE_TOLERANCE * scale:
                pairs.add(frozenset((a, b)))
    return [Interaction(pair, frozenset()) for pair in pairs]


def split_hubs(
    names: Sequence[str],
    terms: Sequence[Interaction],
    usable: Mapping[str, Sequence[int]],
    max_joint: int = MAX_JOINT,
) -> tuple[list[str], list[tuple[str, ...]]]:
    """Hubs (in the order removed: most neighbours first) and the connected components left.

    The hparam with the most neighbours in the component of most joint sizes is removed until
    no component of two or more hparams has more than ``max_joint`` joint sizes."""
    known = set(names)
    neighbours: dict[str, set[str]] = {name: set() for name in names}
    for term in terms:
        members = (term.names | {gate for gate, _ in term.gates}) & known
        for member in members:
            neighbours[member] |= members - {member}
    hubs: list[str] = []
    while True:
        components = _components([n for n in names if n not in hubs], neighbours)
        large = [c for c in components if len(c) > 1 and _joint(c, usable) > max_joint]
        if not large:
            return hubs, components
        worst = set(max(large, key=lambda c: _joint(c, usable)))
        hubs.append(
            min(worst, key=lambda n: (-len(neighbours[n] & worst), len(usable[n]), names.index(n)))
        )


def _components(names: list[str], neighbours: Mapping[str, set[str]]) -> list[tuple[str, ...]]:
    alive, seen, components = set(names), set(), []
    for name in names:
        if name in seen:
            continue
        stack, members = [name], []
        seen.add(name)
        while stack:
            member = stack.pop()
            members.append(member)
            for other in neighbours[member] & alive - seen:
                seen.add(other)
                stack.append(other)
        components.append(tuple(n for n in names if n in set(members)))
    return components


def _joint(component: Sequence[str], usable: Mapping[str, Sequence[int]]) -> int:
    return math.prod(len(usable[name]) for name in component)


class CostSplit:
    """The cost as a constant per hub combination plus one table per component.

    ``base`` holds every allocated hparam's full size (and the single size of those with only
    one); a component's table is the cost saved by each of its joint sizes, everything else as
    in ``base`` updated with the hub sizes.
    """

    def __init__(
        self,
        cost: Cost,
        usable: Mapping[str, Sequence[int]],
        base: Mapping[str, int],
        max_joint: int = MAX_JOINT,
        max_combinations: int = 4096,
    ) -> None:
        self.cost = cost
        self.max_combinations = max_combinations
        self.usable = usable
        self.base = dict(base)
        names = [name for name, sizes in usable.items() if len(sizes) > 1]
        interacting = getattr(cost, "interacting", None)
        terms = interacting() if interacting is not None else probed_interactions(cost, usable)
        self.hubs, self.components = split_hubs(names, terms, usable, max_joint)
        self.joint = [list(itertools.product(*(usable[n] for n in c))) for c in self.components]
        self.entries = sum(len(joint) for joint in self.joint)
        self._kept = getattr(cost, "kept_positions", None)
        self._kept_cache: dict[tuple[str, int], frozenset[int]] = {}
        self._tables: dict[tuple[int, Hashable], np.ndarray] = {}
        hubs = set(self.hubs)
        # Per component: the hubs whose sizes its table depends on, the (hub, position) gates
        # it depends on only through whether they are kept, and its terms' hub gates.
        self._values: list[tuple[str, ...]] = []
        self._gates: list[tuple[tuple[str, int], ...]] = []
        self._term_gates: list[list[frozenset[tuple[str, int]]]] = []
        for component in self.components:
            members = set(component)
            touching = [t for t in terms if (t.names | {g for g, _ in t.gates}) & members]
            values = {n for t in touching for n in t.names & hubs}
            gates = {
                (g, p)
                for t in touching
                for g, p in t.gates
                if g in hubs and (g not in values or self._kept is None)
            }
            if self._kept is None:  # no way to tell which positions a size keeps
                values |= {g for g, _ in gates}
                gates = set()
            self._values.append(tuple(h for h in self.hubs if h in values))
            self._gates.append(tuple(sorted(gates)))
            self._term_gates.append(
                [frozenset((g, p) for g, p in t.gates if (g, p) in gates) for t in touching]
            )

    def kept(self, name: str, size: int) -> frozenset[int]:
        key = (name, size)
        if key not in self._kept_cache:
            self._kept_cache[key] = self._kept(name, size)
        return self._kept_cache[key]

    def key(self, index: int, hubs: Mapping[str, int]) -> Hashable | None:
        """What component ``index``'s table depends on under the hub sizes ``hubs``; None when
        every term it is in lives in a layer the hubs drop (it then costs nothing)."""
        kept = {g: g[1] in self.kept(g[0], hubs[g[0]]) for g in self._gates[index]}
        if self._term_gates[index] and all(
            any(not kept[gate] for gate in term) for term in self._term_gates[index]
        ):
            return None
        return (
            tuple(hubs[h] for h in self._values[index]),
            tuple(kept[gate] for gate in self._gates[index]),
        )

    def savings(self, index: int, hubs: Mapping[str, int]) -> np.ndarray | None:
        """Cost saved by each of component ``index``'s joint sizes (:attr:`joint`) against
        all of it at full size, or None when it costs nothing under ``hubs``."""
        key = self.key(index, hubs)
        if key is None:
            return None
        if (index, key) not in self._tables:
            self._tables[index, key] = self._measure(index, hubs)
        return self._tables[index, key]

    def _measure(self, index: int, hubs: Mapping[str, int]) -> np.ndarray:
        config = {**self.base, **hubs}
        component = self.components[index]
        deltas = getattr(self.cost, "deltas", None)
        if deltas is not None:
            changes = [dict(zip(component, sizes, strict=True)) for sizes in self.joint[index]]
            return -np.asarray(deltas(config, changes), dtype=float)
        # Along the last hparam for each joint size of the others (a sweep where the cost
        # has one), in the order of :attr:`joint`.
        here = self.cost(config)
        *front, last = component
        saved = []
        for prefix in itertools.product(*(self.usable[n] for n in front)):
            swept = {**config, **dict(zip(front, prefix, strict=True))}
            costs = costs_along(self.cost, swept, [last], list(self.usable[last]))
            saved += [here - c for c in costs]
        return np.asarray(saved, dtype=float)

    def fits(self, grid: Mapping[str, Sequence[int]]) -> bool:
        """Whether a grid of hub sizes has few enough combinations, and needs few enough table
        entries (a table depends on some hubs' sizes, on a gating hub only through which
        layers it keeps)."""
        combinations = math.prod(len(sizes) for sizes in grid.values())
        by_size = {hub for values in self._values for hub in values}
        tables = math.prod(len(grid[hub]) for hub in by_size)
        return combinations <= self.max_combinations and tables * self.entries <= MAX_ENTRIES

    def thinned(
        self, grid: Mapping[str, Sequence[int]], keep: Mapping[str, int]
    ) -> dict[str, list[int]]:
        """``grid`` with its longest size lists halved (evenly spaced, both ends and ``keep``'s
        size kept) until it fits."""
        grid = {hub: list(sizes) for hub, sizes in grid.items()}
        while not self.fits(grid):
            hub = max(grid, key=lambda h: len(grid[h]))
            sizes = grid[hub]
            if len(sizes) <= 3:
                break
            count = (len(sizes) + 1) // 2
            picks = {sizes[round(i * (len(sizes) - 1) / (count - 1))] for i in range(count)}
            grid[hub] = sorted(picks | {keep[hub]})
        return grid

    def constants(self, hubs: Sequence[str], combos: Sequence[tuple[int, ...]]) -> list[float]:
        """The cost of each combination of sizes of ``hubs``, every component at full size: a
        sweep of the last hub per combination of the others."""
        if not hubs:
            return [self.cost(self.base) for _ in combos]
        *front, last = hubs
        groups: dict[tuple[int, ...], list[int]] = {}
        for combo in combos:
            groups.setdefault(combo[:-1], []).append(combo[-1])
        values: dict[tuple[int, ...], float] = {}
        for prefix, sizes in groups.items():
            swept = {**self.base, **dict(zip(front, prefix, strict=True))}
            costs = costs_along(self.cost, swept, [last], sizes)
            values.update({(*prefix, size): c for size, c in zip(sizes, costs, strict=True)})
        return [values[combo] for combo in combos]
