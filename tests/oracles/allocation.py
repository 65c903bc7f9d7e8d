"""The brute-force oracle the allocation tests compare against: a config's total damage and
the least damage of any config within a cost limit, by enumerating every combination."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping

from nasframe.searchers.allocation import monotone_degradation

Sensitivity = Mapping[str, Mapping[int, float]]


def damage(sensitivity: Sensitivity, config: Mapping[str, int]) -> float:
    """The summed (monotone) degradation of ``config``'s sizes."""
    return sum(monotone_degradation(sensitivity[name])[size] for name, size in config.items())


def optimum(
    sensitivity: Sensitivity, cost: Callable[[dict[str, int]], float], limit: float
) -> float:
    """The least total damage of any config within ``limit`` (sizes of infinite degradation
    left out); ``inf`` when none fits."""
    names = list(sensitivity)
    usable = [
        [c for c, d in monotone_degradation(sensitivity[n]).items() if math.isfinite(d)]
        for n in names
    ]
    best = math.inf
    for sizes in itertools.product(*usable):
        config = dict(zip(names, sizes, strict=True))
        if cost(config) <= limit:
            best = min(best, damage(sensitivity, config))
    return best
