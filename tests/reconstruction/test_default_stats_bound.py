"""The default reconstruction statistics bound is relative to the model (an eighth of its
weight bytes, within [512 MiB, 2 GiB]) and, like any bound, changes only the chunking."""

from __future__ import annotations

import pytest
import torch
from reconstruction_support import batches_for, mlp_space
from torch import nn

import nasframe
from nasframe.reconstruction import stats
from nasframe.reconstruction.stats import default_max_stats_bytes

GIB = 2**30


class _Sized(nn.Module):
    """A module whose parameters are ``nbytes`` bytes, without allocating them."""

    def __init__(self, nbytes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(nbytes // 4, device="meta"))


@pytest.mark.parametrize(
    ("weights", "bound"),
    [
        (0, GIB // 2),  # a small model: at least 512 MiB, not dozens of passes
        (2 * GIB, GIB // 2),
        (int(4.1 * GIB), int(4.1 * GIB) // 8),  # TinyLlama-1.1B in fp32: about 0.51 GiB
        (64 * GIB, 2 * GIB),  # never above the old fixed 2 GiB
    ],
)
def test_the_default_bound_is_an_eighth_of_the_weights_within_half_and_two_gib(weights, bound):
    assert default_max_stats_bytes(_Sized(weights)) == pytest.approx(bound, abs=4)


def test_tied_weights_count_once():
    model = nn.Sequential(_Sized(16 * GIB), _Sized(0))
    model[1].weight = model[0].weight
    assert default_max_stats_bytes(model) == 2 * GIB
    assert default_max_stats_bytes(nn.Sequential(_Sized(12 * GIB))) == int(1.5 * GIB)


def test_reconstruct_uses_the_model_relative_bound_and_gives_the_same_result(monkeypatch):
    """With the default the bound comes from the model; shrinking it to force one pass per
    target gives the very same weights."""
    config = {"layers.0.out_features": 9, "layers.1.out_features": 5, "layers.2.out_features": 3}
    spaces = [mlp_space(widths=(16, 12, 10), importance_seed=2) for _ in range(2)]
    for space in spaces:
        space.select(config)
    batches = batches_for(6, count=4)
    calls = []

    def forward(model, batch):
        calls.append(1)
        return model(batch)

    nasframe.reconstruct(spaces[0], batches, forward, "lsq")
    assert len(calls) == 4  # the floor: one pass, as with the old 2 GiB default
    calls.clear()
    seen = []

    def tiny_bound(model: nn.Module) -> int:
        seen.append(model)
        return 1

    monkeypatch.setattr("nasframe.reconstruction.reconstruct.default_max_stats_bytes", tiny_bound)
    nasframe.reconstruct(spaces[1], batches, forward, "lsq")
    assert seen == [spaces[1].model] and len(calls) == 3 * 4  # a pass per target
    first, second = (space.model.state_dict() for space in spaces)
    for name, value in first.items():
        assert torch.equal(value, second[name]), name
    assert stats.MAX_DEFAULT_STATS_BYTES == 2 * GIB
