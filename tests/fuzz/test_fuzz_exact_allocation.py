"""Fuzzing the exact allocation: random sums of products of random hparams (some terms gated
by a depth-like hparam that keeps its first ``depth`` layers), random noisy curves with NaN
and infinite scores here and there, and random limits. Against brute force, every outcome is
either the optimum within the limit or a ValueError exactly when no finite config fits; a
looser limit never does more damage; the threshold allocation never does less; no hparam can
grow one more size within the limit."""

from __future__ import annotations

import math

import pytest
from fuzz_inputs import PROPERTY
from hypothesis import given
from hypothesis import strategies as st
from oracles.allocation import damage, optimum

from nasframe.searchers.allocation import threshold_allocation
from nasframe.searchers.exact_allocation import exact_allocation

SCORES = st.one_of(
    st.floats(0, 50, allow_nan=False),
    st.sampled_from([0.0, 1e-12, 1e12, math.nan, math.inf]),
)


@st.composite
def problems(draw):
    count = draw(st.integers(1, 5))
    names = [f"h{i}" for i in range(count)]
    choices = {n: sorted(draw(st.sets(st.integers(1, 9), min_size=1, max_size=4))) for n in names}
    gate = draw(st.sampled_from([None, *names]))
    sensitivity = {}
    for name, sizes in choices.items():
        values = draw(st.lists(SCORES, min_size=len(sizes), max_size=len(sizes)))
        sensitivity[name] = dict(zip(sizes, values, strict=True))
        sensitivity[name][sizes[-1]] = 0.0
    terms = []
    for _ in range(draw(st.integers(1, 4))):
        members = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
        layer = draw(st.one_of(st.none(), st.integers(0, 8))) if gate else None
        terms.append((draw(st.floats(0.1, 100)), [m for m in members if m != gate], layer))
    constant = draw(st.floats(0, 50))

    def cost(config) -> float:
        total = constant
        for weight, members, layer in terms:
            if layer is None or config[gate] > layer:
                total += weight * math.prod(config[m] for m in members)
        return total

    full = cost({n: s[-1] for n, s in choices.items()})
    limits = sorted(draw(st.lists(st.floats(0, 1.2), min_size=2, max_size=2)))
    return sensitivity, cost, [fraction * full for fraction in limits]


def allocate(sensitivity, cost, limit) -> dict[str, int] | None:
    try:
        return exact_allocation(sensitivity, cost, limit)
    except ValueError:
        return None


@PROPERTY
@given(problem=problems())
def test_the_exact_allocation_is_the_optimum_or_a_value_error(problem) -> None:
    sensitivity, cost, limits = problem
    found = [allocate(sensitivity, cost, limit) for limit in limits]
    for config, limit in zip(found, limits, strict=True):
        best = optimum(sensitivity, cost, limit)
        if config is None:
            assert best == math.inf
            continue
        assert cost(config) <= limit
        assert all(config[name] in sensitivity[name] for name in sensitivity)
        assert damage(sensitivity, config) <= best + 1e-9 * max(1.0, best)
        threshold = threshold_allocation(sensitivity, cost, limit)
        assert damage(sensitivity, config) <= damage(sensitivity, threshold) + 1e-9
        for name, per_choice in sensitivity.items():
            larger = [c for c in sorted(per_choice) if c > config[name]]
            if larger:
                assert cost({**config, name: larger[0]}) > limit
    if all(config is not None for config in found):
        strict, loose = (damage(sensitivity, config) for config in found)
        assert loose <= strict + 1e-9 * max(1.0, strict)


@pytest.mark.parametrize("limit", [0.0, -1.0])
def test_a_limit_nothing_meets_is_a_value_error(limit) -> None:
    sensitivity = {"a": {1: 1.0, 2: 0.0}}
    with pytest.raises(ValueError):
        exact_allocation(sensitivity, lambda config: float(config["a"]), limit)
