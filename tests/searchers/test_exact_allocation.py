"""The exact allocation on synthetic costs that interact as a transformer's do: a hidden size
that multiplies every layer's widths, KV groups times heads per group, and a depth that
removes whole layers (which then cost nothing)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles.allocation import damage, optimum

from nasframe.searchers import exact_allocation as exact_module
from nasframe.searchers import interactions
from nasframe.searchers.allocation import threshold_allocation
from nasframe.searchers.exact_allocation import exact_allocation
from nasframe.searchers.interactions import CostSplit, probed_interactions, split_hubs

QUICK = settings(max_examples=40, deadline=None)


@st.composite
def layered_problems(draw, max_layers: int = 3):
    """``hidden * (a * ffn_i + b * heads_i * groups_i + 1) + c`` over the layers the depth
    keeps (in a random order of importance), noisy or smooth degradation curves, and two
    feasible limits."""
    layers = draw(st.integers(1, max_layers))

    def sizes(top: int, most: int) -> list[int]:
        return sorted(draw(st.sets(st.integers(1, top), min_size=1, max_size=most)))

    choices = {"hidden": sizes(6, 3), "layers.depth": list(range(1, layers + 1))}
    for i in range(layers):
        choices[f"layers.{i}.ffn"] = sizes(8, 3)
        choices[f"layers.{i}.heads"] = sizes(3, 3)
        choices[f"layers.{i}.groups"] = sizes(2, 2)
    noisy = draw(st.booleans())
    sensitivity = {}
    for name, allowed in choices.items():
        if noisy:
            values = draw(
                st.lists(st.integers(0, 40), min_size=len(allowed), max_size=len(allowed))
            )
        else:
            weight = draw(st.integers(1, 20))
            values = [weight * (1 - s / allowed[-1]) ** 2 for s in allowed]
        sensitivity[name] = {s: float(v) for s, v in zip(allowed, values, strict=True)}
        sensitivity[name][allowed[-1]] = 0.0
    a, b, c = draw(st.integers(1, 9)), draw(st.integers(1, 9)), draw(st.integers(0, 20))
    order = draw(st.permutations(range(layers)))

    def cost(config) -> float:
        kept = order[: config["layers.depth"]]
        widths = sum(
            a * config[f"layers.{i}.ffn"]
            + b * config[f"layers.{i}.heads"] * config[f"layers.{i}.groups"]
            + 1
            for i in kept
        )
        return float(config["hidden"] * widths + c)

    smallest = cost({name: allowed[0] for name, allowed in choices.items()})
    largest = cost({name: allowed[-1] for name, allowed in choices.items()})
    limits = sorted(
        draw(st.lists(st.integers(int(smallest), int(largest)), min_size=2, max_size=2))
    )
    return sensitivity, cost, [float(limit) for limit in limits]


def open_steps(sensitivity, cost, config) -> list[float]:
    """What growing each hparam by one allowed size would add to the cost."""
    here = cost(config)
    grown = []
    for name, per_choice in sensitivity.items():
        larger = [c for c in sorted(per_choice) if c > config[name]]
        if larger:
            grown.append(cost({**config, name: larger[0]}) - here)
    return grown


@QUICK
@given(problem=layered_problems(max_layers=2))
def test_the_result_meets_the_limit_and_is_the_brute_force_optimum(problem) -> None:
    sensitivity, cost, (limit, _) = problem
    config = exact_allocation(sensitivity, cost, limit)
    assert set(config) == set(sensitivity)
    assert all(config[name] in sensitivity[name] for name in config)
    assert cost(config) <= limit
    best = optimum(sensitivity, cost, limit)
    # Exact: well within the 1% asked of it.
    assert damage(sensitivity, config) <= best + 1e-9 * max(1.0, best)


@QUICK
@given(problem=layered_problems())
def test_a_looser_budget_never_gives_more_damage(problem) -> None:
    sensitivity, cost, (strict, loose) = problem
    tight = damage(sensitivity, exact_allocation(sensitivity, cost, strict))
    assert damage(sensitivity, exact_allocation(sensitivity, cost, loose)) <= tight + 1e-9


@QUICK
@given(problem=layered_problems())
def test_never_more_damage_than_the_threshold_allocation(problem) -> None:
    sensitivity, cost, (limit, _) = problem
    found = damage(sensitivity, exact_allocation(sensitivity, cost, limit))
    assert found <= damage(sensitivity, threshold_allocation(sensitivity, cost, limit)) + 1e-9


@QUICK
@given(problem=layered_problems())
def test_the_budget_left_is_smaller_than_the_cheapest_step_not_taken(problem) -> None:
    sensitivity, cost, (limit, _) = problem
    config = exact_allocation(sensitivity, cost, limit)
    assert all(cost(config) + step > limit for step in open_steps(sensitivity, cost, config))


def test_no_config_within_the_limit_is_a_value_error() -> None:
    sensitivity = {"a": {1: 5.0, 2: 0.0}, "b": {1: float("nan"), 2: 1.0, 3: 0.0}}

    def cost(config) -> float:
        return float(config["a"] * config["b"])

    with pytest.raises(ValueError, match="cannot be met"):
        exact_allocation(sensitivity, cost, 1.5)  # only b=1 (a NaN score) would fit
    assert exact_allocation(sensitivity, cost, 2.0) == {"a": 1, "b": 2}


def test_the_hubs_are_the_hidden_size_and_the_depth() -> None:
    usable = {"hidden": list(range(1, 7)), "layers.depth": [1, 2, 3]}
    for i in range(3):
        usable |= {f"layers.{i}.ffn": list(range(1, 9)), f"layers.{i}.heads": [1, 2, 3]}
        usable |= {f"layers.{i}.groups": [1, 2]}

    def cost(config) -> float:
        kept = range(config["layers.depth"])
        return float(
            config["hidden"]
            * sum(
                config[f"layers.{i}.ffn"]
                + config[f"layers.{i}.heads"] * config[f"layers.{i}.groups"]
                for i in kept
            )
        )

    split = CostSplit(cost, usable, {n: s[-1] for n, s in usable.items()})
    assert split.hubs == ["hidden", "layers.depth"]
    layers = [(f"layers.{i}.ffn",) for i in range(3)]
    layers += [(f"layers.{i}.heads", f"layers.{i}.groups") for i in range(3)]
    assert sorted(split.components) == sorted(layers)


def test_a_product_of_all_hparams_still_splits() -> None:
    names = [f"h{i}" for i in range(5)]
    usable = {n: list(range(1, 9)) for n in names}
    cost = lambda config: float(math.prod(config.values()))  # noqa: E731
    hubs, components = split_hubs(names, probed_interactions(cost, usable), usable, 512)
    assert len(hubs) == 2 and [len(c) for c in components] == [3]


@QUICK
@given(problem=layered_problems(max_layers=2))
def test_with_hubs_left_to_coordinate_descent_the_result_is_still_safe(problem) -> None:
    sensitivity, cost, (limit, _) = problem
    config = exact_allocation(sensitivity, cost, limit, max_combinations=1)
    assert cost(config) <= limit
    threshold = threshold_allocation(sensitivity, cost, limit)
    assert damage(sensitivity, config) <= damage(sensitivity, threshold) + 1e-9


@settings(max_examples=15, deadline=None)
@given(problem=layered_problems(max_layers=2))
def test_highs_finds_the_same_optimum_as_the_pareto_merge(problem) -> None:
    sensitivity, cost, (limit, _) = problem
    merged = damage(sensitivity, exact_allocation(sensitivity, cost, limit))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exact_module, "MERGE_STATES", 0)  # every knapsack goes to HiGHS
        config = exact_allocation(sensitivity, cost, limit)
    assert cost(config) <= limit
    assert damage(sensitivity, config) == pytest.approx(merged, rel=1e-9, abs=1e-9)


def test_an_interaction_the_probes_miss_falls_back_to_a_config_within_the_limit() -> None:
    # a and b interact only when both keep 3 units: the probes (smallest, middle) never see
    # it, so the split believes the cost adds up and its optimum (3, 3) is over the limit.
    sensitivity = {"a": {1: 9.0, 2: 5.0, 3: 1.0, 4: 0.0}, "b": {1: 9.0, 2: 5.0, 3: 1.0, 4: 0.0}}

    def cost(config) -> float:
        a, b = config["a"], config["b"]
        return float(a + b + (100 if (a, b) == (3, 3) else 0))

    config = exact_allocation(sensitivity, cost, 6.0)
    assert cost(config) <= 6.0
    assert damage(sensitivity, config) == optimum(sensitivity, cost, 6.0)  # (4, 2) or (2, 4)


def test_a_hub_with_many_sizes_is_searched_on_a_grid_and_refined(monkeypatch) -> None:
    sensitivity = {"hidden": {h: (64 - h) ** 1.5 / 40 for h in range(1, 65)}}
    for i in range(3):
        sensitivity[f"ffn{i}"] = {f: (i + 1) * (16 - f) ** 2 / 30 for f in range(1, 17)}

    def cost(config) -> float:
        return float(config["hidden"] * (sum(config[f"ffn{i}"] for i in range(3)) + 2))

    limit = 0.45 * cost({name: max(per) for name, per in sensitivity.items()})
    everything = exact_allocation(sensitivity, cost, limit)
    thinned = []
    original = CostSplit.thinned
    monkeypatch.setattr(interactions, "MAX_ENTRIES", 400)  # 8 of the 64 hidden sizes at once
    monkeypatch.setattr(
        CostSplit, "thinned", lambda self, *a: thinned.append(1) or original(self, *a)
    )
    config = exact_allocation(sensitivity, cost, limit)
    assert thinned
    assert cost(config) <= limit
    threshold = threshold_allocation(sensitivity, cost, limit)
    assert damage(sensitivity, config) <= damage(sensitivity, threshold)
    # Refined around the coarse grid's best, it lands close to the full enumeration here.
    assert damage(sensitivity, config) <= 1.01 * damage(sensitivity, everything)


def test_a_dropped_layer_keeps_its_widths_at_full_size() -> None:
    # Layer 1 costs nothing once the depth drops it, and its widths are free to prune
    # (no damage anywhere): they stay at full size rather than at an arbitrary free size.
    sensitivity = {
        "layers.depth": {1: 1.0, 2: 0.0},
        "layers.0.ffn": {2: 5.0, 4: 0.0},
        "layers.1.ffn": {2: 0.0, 4: 0.0},
        "layers.1.heads": {1: 0.0, 2: 0.0},
    }

    def cost(config) -> float:
        second = config["layers.1.ffn"] + config["layers.1.heads"] + 100
        return config["layers.0.ffn"] + (second if config["layers.depth"] == 2 else 0.0)

    config = exact_allocation(sensitivity, cost, 10.0)
    assert config == {"layers.depth": 1, "layers.0.ffn": 4, "layers.1.ffn": 4, "layers.1.heads": 2}
