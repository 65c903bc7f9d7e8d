"""Put every hparam's degradation curve on a common scale before allocating.

Raw degradations compare hparams by the searcher's own measure (gradnas: squared mask
gradients, an estimate of the loss increase; fastnas: the measured score drop). Normalising
makes each hparam's curve relative to itself instead:

- ``none``: the curves as measured;
- ``sum``: divided by the hparam's total damage (its degradation at its smallest allowed
  size), so every hparam goes from 0 to about 1 — the per-hparam sum of unit scores, for
  scores that add up;
- ``max``: divided by the largest damage per unit along the curve (the most important
  pruned unit, for per-unit scores).

Which one allocates best is an empirical question; the benchmark measures all three.
"""

from __future__ import annotations

import math

from nasframe.errors import UserInputError
from nasframe.searchers.allocation import Sensitivity, monotone_degradation

NORMALIZATIONS = ("none", "sum", "max")


def normalize_sensitivity(sensitivity: Sensitivity, how: str) -> dict[str, dict[int, float]]:
    """``sensitivity`` with each hparam's curve divided by its scale under ``how``.

    An hparam whose scale is 0 or not finite (nothing it prunes costs anything, or its
    scores diverged) keeps its curve as it is.
    """
    if how not in NORMALIZATIONS:
        raise UserInputError(
            f"unknown score normalisation {how!r}; use one of {', '.join(NORMALIZATIONS)}."
        )
    result = {name: dict(per_choice) for name, per_choice in sensitivity.items()}
    if how == "none":
        return result
    for name, per_choice in result.items():
        scale = _scale(per_choice, how)
        if scale > 0 and math.isfinite(scale):
            result[name] = {choice: value / scale for choice, value in per_choice.items()}
    return result


def _scale(per_choice: dict[int, float], how: str) -> float:
    curve = monotone_degradation(per_choice)
    finite = sorted((c, d) for c, d in curve.items() if math.isfinite(d))
    if how == "sum":
        return finite[0][1] if finite else 0.0
    # max: the steepest damage per unit between neighbouring sizes
    per_unit = [
        (d_small - d_large) / (c_large - c_small)
        for (c_small, d_small), (c_large, d_large) in zip(finite, finite[1:], strict=False)
    ]
    return max(per_unit, default=0.0)
