"""Allocation (``nasframe.searchers.allocation``): the threshold allocation against a brute
force, NaN degradations, and uniform allocations that cannot be met naming their cause."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from models import ResidualMLP, seeded
from torch.nn import functional as F

import nasframe
from nasframe import UserInputError
from nasframe.searchers.allocation import monotone_degradation, threshold_allocation


@st.composite
def allocation_problems(draw):
    """Sensitivities of a few hparams, a cost that grows with every size, and a feasible limit."""
    count = draw(st.integers(1, 4))
    sensitivity, weights = {}, {}
    for index in range(count):
        choices = sorted(draw(st.sets(st.integers(1, 12), min_size=1, max_size=6)))
        degradations = draw(
            st.lists(st.integers(-5, 40), min_size=len(choices), max_size=len(choices))
        )
        per_choice = dict(zip(choices, degradations, strict=True))
        per_choice[choices[-1]] = 0  # the full size degrades by nothing
        sensitivity[f"h{index}"] = per_choice
        weights[f"h{index}"] = draw(st.integers(1, 9))
    fixed = draw(st.integers(0, 20))

    def cost(config) -> float:
        return fixed + sum(weights[name] * size for name, size in config.items())

    smallest = cost({name: min(per) for name, per in sensitivity.items()})
    largest = cost({name: max(per) for name, per in sensitivity.items()})
    limit = draw(st.integers(smallest, largest))
    other = draw(st.integers(smallest, largest))
    return sensitivity, cost, limit, other


def scaled(sensitivity, factor: float):
    return {name: {c: d * factor for c, d in per.items()} for name, per in sensitivity.items()}


def brute_force(sensitivity, cost, limit):
    """The config at the smallest distinct threshold that meets the limit, by linear scan."""
    monotone = {}
    for name, per in sensitivity.items():
        worst, monotone[name] = 0.0, {}
        for index, choice in enumerate(sorted(per, reverse=True)):
            worst = max(worst, per[choice]) if index else 0.0
            monotone[name][choice] = worst
    thresholds = sorted({0.0} | {d for per in monotone.values() for d in per.values()})
    for threshold in thresholds:
        config = {
            name: min(c for c, d in per.items() if d <= threshold) for name, per in monotone.items()
        }
        if cost(config) <= limit:
            return config
    raise AssertionError("infeasible")


@settings(max_examples=150, deadline=None)
@given(problem=allocation_problems())
def test_threshold_allocation_meets_the_limit_at_the_smallest_threshold(problem) -> None:
    sensitivity, cost, limit, _ = problem
    config = threshold_allocation(sensitivity, cost, limit)
    assert set(config) == set(sensitivity)
    assert all(config[name] in sensitivity[name] for name in config)
    assert cost(config) <= limit
    assert config == brute_force(sensitivity, cost, limit)


@settings(max_examples=150, deadline=None)
@given(problem=allocation_problems())
def test_threshold_allocation_is_monotone_in_the_limit(problem) -> None:
    sensitivity, cost, limit, other = problem
    strict, loose = sorted((limit, other))
    strict_config = threshold_allocation(sensitivity, cost, strict)
    loose_config = threshold_allocation(sensitivity, cost, loose)
    assert all(strict_config[name] <= loose_config[name] for name in sensitivity)


@settings(max_examples=150, deadline=None)
@given(problem=allocation_problems())
def test_threshold_allocation_is_scale_free(problem) -> None:
    sensitivity, cost, limit, _ = problem
    config = threshold_allocation(sensitivity, cost, limit)
    assert threshold_allocation(scaled(sensitivity, 1e-12), cost, limit) == config
    assert threshold_allocation(scaled(sensitivity, 1e12), cost, limit) == config


def test_threshold_allocation_refuses_an_unreachable_limit() -> None:
    sensitivity = {"a": {2: 1.0, 4: 0.0}}
    with pytest.raises(ValueError, match="cannot be met"):
        threshold_allocation(sensitivity, lambda config: config["a"], 1)


def test_noisy_sensitivities_never_make_a_smaller_size_look_better() -> None:
    # Keeping 2 units measured better than keeping 3 (noise): 2 must not be chosen over 3
    # at a threshold that rejects 3.
    sensitivity = {"a": {1: 5.0, 2: 0.5, 3: 1.0, 4: 0.0}, "b": {1: 0.7, 2: 0.0}}
    config = threshold_allocation(sensitivity, lambda c: c["a"] + c["b"], 5)
    assert config == {"a": 4, "b": 1}


def test_nan_degradations_are_never_chosen() -> None:
    """Regression (found in review): a NaN degradation compared as no worse than any other, so
    the threshold allocation could choose a size whose sensitivity was NaN."""
    assert monotone_degradation({4: 0.0, 3: float("nan"), 2: 0.1}) == {
        4: 0.0,
        3: float("inf"),
        2: float("inf"),
    }
    sensitivity = {"a": {4: 0.0, 2: float("nan")}, "b": {4: 0.0, 2: 0.5}}
    config = threshold_allocation(sensitivity, lambda c: c["a"] + c["b"], limit=6)
    assert config == {"a": 4, "b": 2}
    with pytest.raises(ValueError):
        threshold_allocation(sensitivity, lambda c: c["a"] + c["b"], limit=4)


@pytest.mark.parametrize(
    ("hiddens", "constraint"),
    [
        ([5, 7], "params=100%"),  # ratios 0.5 give {2, 5} and {4, 7}: no common size
        ([4, 8], "params=65"),  # smallest config 60 params, smallest same-size config 70
    ],
)
def test_uniform_infeasibility_names_its_cause(hiddens, constraint) -> None:
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, generator=generator), torch.randn(8, 2, generator=generator)
    try:
        nasframe.search(
            seeded(ResidualMLP, 3, 4, hiddens, 2),
            constraint,
            algorithm="fastnas",
            config={
                "score_func": lambda model: -float(F.mse_loss(model(x), y)),
                "uniform": True,
                "verbose": False,
            },
            rules={"*": {"ratios": [0.5, 1.0]}},
        )
    except UserInputError as error:
        # Every score is finite: the message must name the real cause, not NaN/Inf scores.
        assert "not finite" not in str(error), str(error)
        assert "uniform" in str(error), str(error)
        assert constraint != "params=100%", "layers of different full sizes are not one group"
