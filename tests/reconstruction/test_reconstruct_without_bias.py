"""Reconstruction where a bias may not be added (``can_add_bias``): ``lsq`` refits the kept
columns alone, least squares without a bias term, ``bias`` leaves the map alone, and the bias
reserve counts only the biases that may be added."""

from __future__ import annotations

import copy

import torch
from models import seeded
from reconstruction_support import batches_for, outputs, run
from torch import nn

import nasframe
from nasframe.reconstruction.refit import refit_kept_columns


def biasless() -> nn.Module:
    def build() -> nn.Module:
        return nn.Sequential(nn.Linear(6, 16, bias=False), nn.GELU(), nn.Linear(16, 3, bias=False))

    return seeded(build).double()


def pruned_space():
    space = nasframe.convert(biasless())
    space.select({"0.out_features": 7})
    return space


def squared_error(model: nn.Module, dense: torch.Tensor, batches: list) -> float:
    return float(((outputs(model, batches) - dense) ** 2).mean())


def test_lsq_without_a_bias_refits_the_kept_columns_and_adds_none() -> None:
    batches = batches_for(6)
    dense = outputs(biasless(), batches)
    untouched = pruned_space()
    space = pruned_space()
    report = nasframe.reconstruct(space, batches, run, "lsq", can_add_bias=lambda name: False)
    assert report.added_biases == {} == space.added_biases
    assert report.reconstructed == ["2"] and report.without_bias == ["2"]
    assert space.model[2].bias is None
    exported = nasframe.export(copy.deepcopy(space))
    assert exported[2].bias is None and exported[2].in_features == 7
    refitted = squared_error(exported, dense, batches)
    assert refitted < squared_error(nasframe.export(untouched), dense, batches)
    # Adding a bias may only do better: it is the same fit with one more free term.
    with_bias = pruned_space()
    nasframe.reconstruct(with_bias, batches, run, "lsq")
    assert squared_error(nasframe.export(with_bias), dense, batches) <= refitted + 1e-12


def test_the_refit_without_a_bias_is_the_undamped_least_squares_solution() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=generator, dtype=torch.float64) + 0.5
    weight = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    kept = torch.tensor([0, 2, 3])
    columns = refit_kept_columns(weight, x.T @ x / len(x), kept, ridge=0.0)
    expected = torch.linalg.lstsq(x[:, kept], x @ weight.T).solution.T
    torch.testing.assert_close(columns, expected)


def test_bias_mode_leaves_a_map_alone_that_may_not_get_a_bias() -> None:
    space = pruned_space()
    before = space.model[2].weight.detach().clone()
    report = nasframe.reconstruct(space, batches_for(6), run, "bias", can_add_bias=lambda n: False)
    assert report.reconstructed == [] and report.added_biases == {}
    assert "may not get one" in report.skipped["2"]
    assert torch.equal(space.model[2].weight, before) and space.model[2].bias is None


def test_the_bias_reserve_counts_only_biases_that_may_be_added() -> None:
    space = pruned_space()
    assert nasframe.bias_reserve(space) == 3
    assert nasframe.bias_reserve(space, lambda name: name != "2.bias") == 0
