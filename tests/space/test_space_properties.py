"""Properties of converted models, exports and searches over random MLP and residual models."""

from __future__ import annotations

import copy
import random

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from models import input_for, random_mlp, random_residual
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

import nasframe
from nasframe import CostModel, DynamicModule, convert, export

BUILDERS = {"mlp": random_mlp, "residual": random_residual}
builder_names = st.sampled_from(sorted(BUILDERS))
seeds = st.integers(0, 2**31 - 1)
FAST = settings(max_examples=15, deadline=None)
SLOW = settings(max_examples=10, deadline=None)


def build(kind: str, seed: int):
    """A random model (shape from ``seed``), an identical twin, and an input for it."""
    model = BUILDERS[kind](random.Random(seed), seed=seed)
    return model, copy.deepcopy(model), input_for(model)


def set_random_importance(space, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for hparam in space.all_hparams.values():
        hparam.importance = torch.rand(hparam.max, generator=generator)


def real_params(model) -> int:
    return sum(p.numel() for p in model.parameters())  # shared parameters once


def real_flops(model, x) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


@FAST
@given(kind=builder_names, seed=seeds)
def test_full_size_converted_model_equals_the_original_exactly(kind, seed) -> None:
    model, original, x = build(kind, seed)
    space = convert(model)
    set_random_importance(space, seed)  # importance alone must not change the full model
    space.sample(random.Random(seed))
    space.select(space.max_config())
    with torch.no_grad():
        assert torch.equal(space.model(x), original(x))
    assert space.config() == {name: hp.max for name, hp in space.hparams.items()}


@FAST
@given(kind=builder_names, seed=seeds, with_importance=st.booleans())
def test_export_equals_the_dynamic_model(kind, seed, with_importance) -> None:
    model, _, x = build(kind, seed)
    space = convert(model)
    if with_importance:  # kept units are then an index set, not a prefix
        set_random_importance(space, seed)
    config = space.sample(random.Random(seed))
    exported = export(space)
    assert not any(isinstance(m, DynamicModule) for m in exported.modules())
    with torch.no_grad():
        torch.testing.assert_close(exported(x), space.model(x), atol=1e-5, rtol=0)
    # Exporting copies: the space is untouched and still searchable.
    assert space.config() == config
    assert any(isinstance(m, DynamicModule) for m in space.model.modules())


@FAST
@given(kind=builder_names, seed=seeds)
def test_sort_parameters_keeps_outputs_and_the_most_important_units(kind, seed) -> None:
    model, _, x = build(kind, seed)
    space = convert(model)
    set_random_importance(space, seed)
    with torch.no_grad():
        full = space.model(x)
        config = space.sample(random.Random(seed))
        pruned = space.model(x)  # keeps the top units, wherever they are
        space.select(space.max_config())
        space.sort_parameters()
        torch.testing.assert_close(space.model(x), full, atol=1e-5, rtol=0)
        for hparam in space.all_hparams.values():
            scores = hparam.importance
            assert bool((scores[:-1] >= scores[1:]).all())
        space.select(config)
        for hparam in space.hparams.values():
            assert hparam.active_slice == slice(0, hparam.active)  # top units come first
        torch.testing.assert_close(space.model(x), pruned, atol=1e-5, rtol=0)


def fastnas_config(x, y):
    def score(model) -> float:
        return -float(F.mse_loss(model(x), y))

    return {"score_func": score, "verbose": False}


def gradnas_config(x, y):
    batches = [(x[i : i + 4], y[i : i + 4]) for i in range(0, len(x), 4)]
    return {
        "data_loader": batches,
        "loss_func": lambda model, batch: F.mse_loss(model(batch[0]), batch[1]),
        "verbose": False,
    }


SEARCH_CONFIGS = {"fastnas": fastnas_config, "gradnas": gradnas_config}


def smallest_percent(model, kind: str, x) -> float:
    """The smallest reachable cost of ``model`` in percent of its full cost."""
    space = convert(copy.deepcopy(model))
    costs = CostModel(space, x)
    cost = costs.params if kind == "params" else costs.measure_flops  # no FLOP model to fit
    return 100 * cost(space.min_config()) / cost(space.max_config())


@SLOW
@given(
    kind=builder_names,
    seed=seeds,
    algorithm=st.sampled_from(sorted(SEARCH_CONFIGS)),
    cost_kind=st.sampled_from(["params", "flops"]),
    fractions=st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)),
)
def test_search_meets_its_constraint_and_stricter_never_keeps_more(
    kind, seed, algorithm, cost_kind, fractions
) -> None:
    model, twin, x = build(kind, seed)
    generator = torch.Generator().manual_seed(seed)
    data = torch.randn(16, x.shape[1], generator=generator)
    with torch.no_grad():
        target = model(data) + 0.1 * torch.randn(model(data).shape, generator=generator)
    lowest = smallest_percent(model, cost_kind, x) + 1e-6
    strict, loose = sorted(lowest + f * (100 - lowest) for f in fractions)

    results = {}
    for percent, candidate in ((strict, model), (loose, twin)):
        space, result = nasframe.search(
            candidate,
            {cost_kind: f"{percent}%"},
            dummy_input=x,
            algorithm=algorithm,
            config=SEARCH_CONFIGS[algorithm](data, target),
        )
        assert result.config == space.config()
        exported = export(space)
        actual = real_params(exported) if cost_kind == "params" else real_flops(exported, x)
        assert actual <= result.limit
        assert actual == result.cost_after
        with torch.no_grad():
            torch.testing.assert_close(exported(x), space.model(x), atol=1e-5, rtol=0)
        results[percent] = result

    strict_config, loose_config = results[strict].config, results[loose].config
    assert results[strict].sensitivity == results[loose].sensitivity  # same model, same data
    assert set(strict_config) == set(loose_config)
    for name in strict_config:
        assert strict_config[name] <= loose_config[name], name
