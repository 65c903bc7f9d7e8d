"""The cost-aware global allocation and score normalisation, on synthetic sensitivities."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles.allocation import damage, optimum

from nasframe.errors import UserInputError
from nasframe.searchers.allocation import (
    monotone_degradation,
    threshold_allocation,
    uniform_allocation,
)
from nasframe.searchers.global_allocation import global_allocation, hull_steps
from nasframe.searchers.normalization import normalize_sensitivity


@st.composite
def additive_problems(draw):
    """A few hparams with arbitrary (noisy) degradation curves, costs that add up (a weight
    per unit of each hparam), and two feasible limits."""
    count = draw(st.integers(1, 4))
    sensitivity, weights = {}, {}
    for index in range(count):
        choices = sorted(draw(st.sets(st.integers(1, 8), min_size=1, max_size=5)))
        values = draw(st.lists(st.integers(0, 40), min_size=len(choices), max_size=len(choices)))
        per_choice = dict(zip(choices, map(float, values), strict=True))
        per_choice[choices[-1]] = 0.0
        sensitivity[f"h{index}"] = per_choice
        weights[f"h{index}"] = draw(st.integers(1, 9))
    fixed = draw(st.integers(0, 20))

    def cost(config) -> float:
        return float(fixed + sum(weights[name] * size for name, size in config.items()))

    smallest = cost({name: min(per) for name, per in sensitivity.items()})
    largest = cost({name: max(per) for name, per in sensitivity.items()})
    limits = sorted(draw(st.lists(st.integers(smallest, largest), min_size=2, max_size=2)))
    return sensitivity, cost, limits


@settings(max_examples=200, deadline=None)
@given(problem=additive_problems())
def test_the_global_allocation_meets_the_limit_with_allowed_sizes(problem) -> None:
    sensitivity, cost, (limit, _) = problem
    config = global_allocation(sensitivity, cost, limit)
    assert set(config) == set(sensitivity)
    assert all(config[name] in sensitivity[name] for name in config)
    assert cost(config) <= limit


@settings(max_examples=200, deadline=None)
@given(problem=additive_problems())
def test_where_costs_add_up_every_point_of_the_greedy_path_is_optimal(problem) -> None:
    sensitivity, cost, _ = problem
    full = {name: max(per) for name, per in sensitivity.items()}
    monotone = {name: monotone_degradation(per) for name, per in sensitivity.items()}
    steps = sorted(
        step
        for name, per in monotone.items()
        for step in hull_steps(name, sorted(per, reverse=True), per, cost, full)
    )
    config = dict(full)
    for step in steps:
        config[step.name] = step.end
        limit = cost(config)
        found = global_allocation(sensitivity, cost, limit)
        assert damage(sensitivity, found) == pytest.approx(optimum(sensitivity, cost, limit))


@settings(max_examples=200, deadline=None)
@given(problem=additive_problems())
def test_a_stricter_budget_never_keeps_more_where_costs_add_up(problem) -> None:
    sensitivity, cost, (strict, loose) = problem
    strict_config = global_allocation(sensitivity, cost, strict)
    loose_config = global_allocation(sensitivity, cost, loose)
    assert all(strict_config[name] <= loose_config[name] for name in sensitivity)


def test_cheap_damage_per_unit_of_cost_goes_first() -> None:
    # "wide" units carry 100x the cost of "narrow" ones and do 10x the damage: per unit of
    # cost they are 10x cheaper to remove. The threshold allocation, blind to cost, prunes
    # the narrow hparam first; the global one removes wide units.
    sensitivity = {
        "wide": {size: 10.0 * (4 - size) for size in range(1, 5)},
        "narrow": {size: 1.0 * (40 - size) for size in range(1, 41)},
    }

    def cost(config) -> float:
        return 100.0 * config["wide"] + config["narrow"]

    limit = cost({"wide": 4, "narrow": 40}) - 100
    found = global_allocation(sensitivity, cost, limit)
    assert found == {"wide": 3, "narrow": 40}
    threshold = threshold_allocation(sensitivity, cost, limit)
    assert damage(sensitivity, found) < damage(sensitivity, threshold)


def test_a_bump_in_a_curve_does_not_block_the_cheap_steps_behind_it() -> None:
    # Keeping 3 of "a" is expensive (noise), keeping 2 is cheap: the convex hull goes
    # from 4 straight to 2.
    sensitivity = {"a": {1: 50.0, 2: 1.0, 3: 1.0, 4: 0.0}, "b": {1: 30.0, 2: 20.0, 3: 0.9, 4: 0.0}}

    def cost(config) -> float:
        return float(config["a"] + config["b"])

    assert global_allocation(sensitivity, cost, 6) == {"a": 2, "b": 4}


def test_a_limit_between_two_steps_stops_the_last_step_early() -> None:
    sensitivity = {"a": {size: float(8 - size) for size in range(1, 9)}}
    assert global_allocation(sensitivity, lambda c: float(c["a"]), 5.5) == {"a": 5}


def test_interacting_costs_still_meet_the_limit() -> None:
    # A hidden size that multiplies the cost of two widths (as in a transformer).
    sensitivity = {
        "hidden": {h: 3.0 * (8 - h) ** 1.5 for h in range(1, 9)},
        "ffn": {f: 0.5 * (16 - f) ** 1.2 for f in range(1, 17)},
        "heads": {a: 2.0 * (4 - a) for a in range(1, 5)},
    }

    def cost(config) -> float:
        return float(config["hidden"] * (2 * config["ffn"] + 3 * config["heads"]) + 7)

    full = {"hidden": 8, "ffn": 16, "heads": 4}
    for fraction in (0.9, 0.7, 0.5, 0.3):
        limit = fraction * cost(full)
        found = global_allocation(sensitivity, cost, limit)
        assert cost(found) <= limit
        assert damage(sensitivity, found) <= damage(
            sensitivity, threshold_allocation(sensitivity, cost, limit)
        )


def test_the_full_model_is_kept_when_it_fits_and_an_unreachable_limit_is_refused() -> None:
    sensitivity = {"a": {1: 3.0, 2: 0.0}}
    assert global_allocation(sensitivity, lambda c: float(c["a"]), 2) == {"a": 2}
    with pytest.raises(ValueError, match="cannot be met"):
        global_allocation(sensitivity, lambda c: float(c["a"]), 0.5)


def test_sizes_whose_score_diverged_are_never_chosen() -> None:
    sensitivity = {"a": {1: math.nan, 2: 1.0, 3: 0.0}, "b": {1: 5.0, 2: 0.0}}
    found = global_allocation(sensitivity, lambda c: float(c["a"] + c["b"]), 3)
    assert found == {"a": 2, "b": 1}


def test_the_uniform_allocation_takes_the_global_one_per_group() -> None:
    names = [f"layers.{i}.ffn" for i in range(3)]
    sensitivity = {
        name: {size: float(4 - size) * (i + 1) for size in range(1, 5)}
        for i, name in enumerate(names)
    }
    sensitivity["hidden"] = {size: 100.0 * (4 - size) for size in range(1, 5)}

    def cost(config) -> float:
        return float(sum(config.values()))

    found = uniform_allocation(sensitivity, cost, 10, allocate=global_allocation)
    assert len({found[name] for name in names}) == 1
    assert cost(found) <= 10


# --- score normalisation ---------------------------------------------------------------------


def test_sum_normalisation_scales_every_curve_to_one_at_its_smallest_size() -> None:
    sensitivity = {"a": {1: 8.0, 2: 2.0, 4: 0.0}, "b": {2: 0.03, 3: 0.0}}
    normalized = normalize_sensitivity(sensitivity, "sum")
    assert normalized == {"a": {1: 1.0, 2: 0.25, 4: 0.0}, "b": {2: 1.0, 3: 0.0}}


def test_max_normalisation_scales_the_steepest_damage_per_unit_to_one() -> None:
    sensitivity = {"a": {1: 8.0, 2: 2.0, 4: 0.0}}
    # per unit: (2 - 0) / 2 = 1 between 4 and 2; (8 - 2) / 1 = 6 between 2 and 1
    assert normalize_sensitivity(sensitivity, "max") == {"a": {1: 8 / 6, 2: 2 / 6, 4: 0.0}}


def test_none_keeps_the_curves_and_a_flat_curve_is_left_alone() -> None:
    sensitivity = {"a": {1: 8.0, 2: 0.0}, "flat": {1: 0.0, 2: 0.0}}
    assert normalize_sensitivity(sensitivity, "none") == sensitivity
    assert normalize_sensitivity(sensitivity, "sum")["flat"] == {1: 0.0, 2: 0.0}


def test_an_unknown_normalisation_names_the_valid_ones() -> None:
    with pytest.raises(UserInputError, match="use one of none, sum, max"):
        normalize_sensitivity({"a": {1: 1.0}}, "mean")
