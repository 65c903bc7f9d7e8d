"""The exact allocation on a converted tiny Llama (two layers of three KV groups of two heads,
depth, hidden size): its cost model's structure, the brute-force optimum under its params and
FLOPs, inside the uniform allocation, and through ``nasframe.search``."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("transformers")

from hf_models.llama_dims import ids, n_params, tiny_model  # noqa: E402
from oracles.allocation import damage, optimum  # noqa: E402

import nasframe  # noqa: E402
from nasframe.app.lm import next_token_loss  # noqa: E402
from nasframe.cost.cost_model import CostModel  # noqa: E402
from nasframe.searchers.allocation import uniform_groups  # noqa: E402
from nasframe.searchers.allocator import Allocator  # noqa: E402
from nasframe.searchers.config import BinarySearchConfig  # noqa: E402
from nasframe.searchers.exact_allocation import exact_allocation  # noqa: E402
from nasframe.searchers.interactions import probed_interactions  # noqa: E402

RULES = {"*.depth": {}, "*heads*": {}, "*": {"divisor": 16}}
BATCHES = [ids(seed) for seed in range(3)]


@pytest.fixture(scope="module")
def cost_model() -> CostModel:
    space = nasframe.convert(tiny_model(layers=2), RULES)
    # Keep the second layer when the depth is 1, so that the depth decides which layer stays.
    space.hparams["model.layers.depth"].importance = torch.tensor([0.2, 0.9])
    return CostModel(space, BATCHES[0])


def random_sensitivity(space, seed: int) -> dict[str, dict[int, float]]:
    rng = random.Random(seed)
    sensitivity = {}
    for name, hparam in space.hparams.items():
        sensitivity[name] = {c: rng.uniform(0, 10) for c in hparam.choices}
        sensitivity[name][hparam.max] = 0.0
    return sensitivity


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10**6), percent=st.integers(30, 95))
def test_under_the_parameter_count_the_result_is_the_brute_force_optimum(
    cost_model, seed, percent
) -> None:
    space = cost_model.space
    sensitivity = random_sensitivity(space, seed)
    cost = cost_model.cost_fn("params")
    limit = percent / 100 * cost(space.max_config())
    config = exact_allocation(sensitivity, cost, limit)
    assert cost(config) <= limit
    best = optimum(sensitivity, cost, limit)
    assert damage(sensitivity, config) <= best + 1e-9 * max(1.0, best)


def test_under_flops_the_result_is_the_brute_force_optimum(cost_model) -> None:
    space = cost_model.space
    sensitivity = random_sensitivity(space, 7)
    cost = cost_model.cost_fn("flops")
    limit = 0.6 * cost(space.max_config())
    config = exact_allocation(sensitivity, cost, limit)
    assert cost(config) <= limit
    best = optimum(sensitivity, cost, limit)
    assert damage(sensitivity, config) <= best + 1e-9 * max(1.0, best)


@pytest.mark.parametrize("kind", ["params", "flops"])
def test_the_cost_models_terms_cover_every_interaction_a_probe_finds(cost_model, kind) -> None:
    cost = cost_model.cost_fn(kind)
    usable = {name: hp.choices for name, hp in cost_model.space.hparams.items()}
    terms = [t.names | {gate for gate, _ in t.gates} for t in cost.interacting()]
    probed = probed_interactions(cost, usable)
    assert probed
    assert all(any(pair.names <= term for term in terms) for pair in probed)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10**6), kind=st.sampled_from(["params", "flops"]))
def test_cost_deltas_are_differences_of_costs(cost_model, seed, kind) -> None:
    rng = random.Random(seed)
    space = cost_model.space
    cost = cost_model.cost_fn(kind)
    config = {name: rng.choice(hp.choices) for name, hp in space.hparams.items()}
    changes = [
        {name: rng.choice(space.hparams[name].choices) for name in rng.sample(list(config), k)}
        for k in (1, 2, 3, 1)
    ]
    expected = [cost({**config, **change}) - cost(config) for change in changes]
    assert cost.deltas(config, changes) == expected


def test_the_uniform_allocation_runs_the_exact_one_per_group(cost_model) -> None:
    space = cost_model.space
    sensitivity = random_sensitivity(space, 3)
    limit = 0.55 * cost_model.cost("params", space.max_config())
    found = {}
    for allocation in ("exact", "threshold", "global"):
        settings_ = BinarySearchConfig.from_mapping(
            {"allocation": allocation, "uniform": True}, "gradnas"
        )
        allocator = Allocator(space, cost_model, settings_, "gradnas")
        found[allocation] = allocator.allocate(sensitivity, "params", limit)
    config = found["exact"]
    assert cost_model.cost("params", config) <= limit
    for members in uniform_groups(list(sensitivity)).values():
        assert len({config[m] for m in members}) == 1, members
    assert damage(sensitivity, config) <= damage(sensitivity, found["threshold"]) + 1e-9


def search_config(algorithm: str, **extra) -> dict:
    config = {"verbose": False, **extra}
    if algorithm == "gradnas":
        return config | {"data_loader": BATCHES, "loss_func": next_token_loss}
    return config | {"score_func": lambda model: -next_token_loss(model, BATCHES[0]).item()}


def test_a_gradnas_search_with_the_exact_allocation_loses_least() -> None:
    results = {}
    for allocation in ("exact", "global", "threshold"):
        _, results[allocation] = nasframe.search(
            tiny_model(),
            "params=70%",
            algorithm="gradnas",
            config=search_config("gradnas", allocation=allocation),
        )
    totals = {
        allocation: damage(
            result.sensitivity,
            {n: size for n, size in result.config.items() if n in result.sensitivity},
        )
        for allocation, result in results.items()
    }
    assert results["exact"].cost_after <= results["exact"].limit
    assert totals["exact"] <= min(totals["global"], totals["threshold"]) + 1e-9


def test_a_fastnas_flops_search_with_the_exact_allocation_meets_its_constraint() -> None:
    space, result = nasframe.search(
        tiny_model(),
        "flops=60%",
        algorithm="fastnas",
        dummy_input=BATCHES[0],
        config=search_config("fastnas", allocation="exact", min_keep=0.25),
    )
    assert result.cost_after <= result.limit
    assert n_params(nasframe.export(space)) > 0
