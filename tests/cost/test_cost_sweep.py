"""The cost model's sweep (issue 15): costs of one config with some hparams swept over sizes
equal one ``params`` call per size, and the allocations give the same configs with it as
with a plain cost function."""

from __future__ import annotations

import random

import pytest
import torch
from models import ResidualMLP, TiedLM, TransformerLM, seeded

from nasframe import convert
from nasframe.cost.cost_model import CostModel
from nasframe.searchers.allocation import threshold_allocation, uniform_allocation
from nasframe.searchers.global_allocation import global_allocation


def spaces():
    yield convert(seeded(ResidualMLP, 5, 12, [7, 9, 6], 3))
    yield convert(seeded(TiedLM, 11, 6, [5, 7]))
    yield convert(seeded(TransformerLM, 13, 8, 2, 10, 2))
    pytest.importorskip("transformers")
    from hf_models.llama import tiny_model

    yield convert(tiny_model("llama"))


def random_config(space, rng: random.Random) -> dict[str, int]:
    return {name: rng.choice(hp.choices) for name, hp in space.hparams.items()}


def test_params_along_equals_one_count_per_size() -> None:
    rng = random.Random(0)
    for space in spaces():
        cost_model = CostModel(space)
        names = list(space.hparams)
        for _ in range(5):
            config = random_config(space, rng)
            swept = rng.sample(names, k=rng.randint(1, min(3, len(names))))
            sizes = sorted(set.intersection(*(set(space.hparams[n].choices) for n in swept)))
            expected = [cost_model.params({**config, **dict.fromkeys(swept, s)}) for s in sizes]
            assert cost_model.params_along(config, swept, sizes) == expected


def test_param_counts_equal_the_exported_models() -> None:
    """Counting stays analytic and exact: the count of a config is the exported model's."""
    from nasframe import export

    rng = random.Random(1)
    for space in spaces():
        cost_model = CostModel(space)
        for _ in range(3):
            config = random_config(space, rng)
            space.select(config)
            exported = export(space)
            assert cost_model.params(config) == sum(p.numel() for p in exported.parameters())
        space.select(space.max_config())


def sensitivities(space, seed: int) -> dict[str, dict[int, float]]:
    generator = torch.Generator().manual_seed(seed)
    result = {}
    for name, hparam in space.hparams.items():
        curve = torch.rand(len(hparam.choices), generator=generator).sort(descending=True)
        result[name] = dict(zip(hparam.choices, curve.values.tolist(), strict=True))
        result[name][hparam.max] = 0.0
    return result


@pytest.mark.parametrize("allocation", [threshold_allocation, global_allocation])
def test_allocations_choose_the_same_with_the_sweep_as_without(allocation) -> None:
    for seed, space in enumerate(spaces()):
        cost_model = CostModel(space)
        fast = cost_model.cost_fn("params")

        def plain(config, cost_model=cost_model):
            return cost_model.cost("params", config)

        sensitivity = sensitivities(space, seed)
        full = cost_model.params(space.max_config())
        for fraction in (0.5, 0.8, 0.95):
            limit = max(fraction * full, cost_model.params(space.min_config()))
            assert allocation(sensitivity, fast, limit) == allocation(sensitivity, plain, limit)
            assert uniform_allocation(
                sensitivity, fast, limit, allocate=allocation
            ) == uniform_allocation(sensitivity, plain, limit, allocate=allocation)
