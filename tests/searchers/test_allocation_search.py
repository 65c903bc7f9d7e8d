"""``allocation``, ``normalize`` and ``min_keep`` in real searches (gradnas and fastnas) on a
tiny Llama: the result meets its constraint, and the config keys are checked."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("transformers")

from hf_models.llama_dims import ids, n_params, tiny_model  # noqa: E402

import nasframe  # noqa: E402
from nasframe.app.lm import next_token_loss  # noqa: E402
from nasframe.plugins import get_algorithm  # noqa: E402

BATCHES = [ids(seed) for seed in range(3)]


def search_config(algorithm: str, **extra) -> dict:
    config = {"verbose": False, **extra}
    if algorithm == "gradnas":
        return config | {"data_loader": BATCHES, "loss_func": next_token_loss}
    return config | {"score_func": lambda model: -next_token_loss(model, BATCHES[0]).item()}


@settings(max_examples=12, deadline=None)
@given(
    algorithm=st.sampled_from(["gradnas", "fastnas"]),
    normalize=st.sampled_from(["none", "sum", "max"]),
    kind=st.sampled_from(["params", "flops"]),
    percent=st.integers(35, 95),
)
def test_a_global_search_meets_its_constraint(algorithm, normalize, kind, percent) -> None:
    model = tiny_model()
    config = search_config(algorithm, allocation="global", normalize=normalize)
    space, result = nasframe.search(
        model, f"{kind}={percent}%", algorithm=algorithm, dummy_input=BATCHES[0], config=config
    )
    assert result.cost_after <= result.limit
    assert result.cost_before * percent / 100 == pytest.approx(result.limit)
    if kind == "params":
        assert n_params(nasframe.export(space)) == result.cost_after


def test_on_a_tiny_llama_the_global_allocation_loses_less_score_than_the_threshold_one() -> None:
    # A hidden channel costs as much as several FFN neurons of every layer; the threshold
    # allocation ignores costs, the cost-aware greedy does not.
    results = {}
    for allocation in ("threshold", "global"):
        config = search_config("gradnas", allocation=allocation)
        _, results[allocation] = nasframe.search(
            tiny_model(), "params=70%", algorithm="gradnas", config=config
        )
    for result in results.values():
        assert result.cost_after <= result.limit
    total = {
        allocation: sum(
            result.sensitivity[name][size]
            for name, size in result.config.items()
            if name in result.sensitivity
        )
        for allocation, result in results.items()
    }
    assert total["global"] <= total["threshold"]


@pytest.mark.parametrize("allocation", ["threshold", "global"])
def test_min_keep_bounds_every_searched_hparam(allocation) -> None:
    config = search_config("gradnas", allocation=allocation, min_keep=0.5)
    space, result = nasframe.search(tiny_model(), "params=60%", algorithm="gradnas", config=config)
    for name, hparam in space.hparams.items():
        assert result.config[name] >= 0.5 * hparam.max, name
    assert result.cost_after <= result.limit


def test_min_keep_that_makes_the_budget_unreachable_says_so() -> None:
    config = search_config("gradnas", min_keep=0.9)
    with pytest.raises(nasframe.InfeasibleConstraintError, match=r"at least 90% of each"):
        nasframe.search(tiny_model(), "params=50%", algorithm="gradnas", config=config)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("allocation", "greedy", "allocation must be one of threshold, global"),
        ("normalize", "mean", "normalize must be one of none, sum, max"),
        ("min_keep", 1.5, r"min_keep must be a fraction of each hparam's size in \[0, 1\]"),
        ("min_keep", True, "min_keep must be a fraction"),
    ],
)
def test_bad_allocation_settings_are_named(key, value, message) -> None:
    searcher = get_algorithm("fastnas")()
    with pytest.raises(nasframe.UserInputError, match=message):
        searcher.sanitize_search_config({"score_func": lambda m: 0.0, key: value})


def test_normalisation_leaves_the_reported_scores_and_sensitivities_raw() -> None:
    results = {}
    for normalize in ("none", "sum"):
        config = search_config("gradnas", normalize=normalize)
        _, results[normalize] = nasframe.search(
            tiny_model(), "params=60%", algorithm="gradnas", config=config
        )
    for name, scores in results["none"].importance.items():
        assert torch.equal(scores, results["sum"].importance[name])
    assert results["none"].sensitivity == results["sum"].sensitivity  # reported raw
