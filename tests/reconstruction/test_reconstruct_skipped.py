"""What reconstruction skips (shared weights, readers of a normalised stream) and what it
restores afterwards (the selected config, training flags, weights after a failing forward)."""

from __future__ import annotations

import copy

import pytest
import torch
from models import ResidualMLP, seeded
from reconstruction_support import batches_for, mlp_space, run
from torch import nn

import nasframe


class SharedReadout(nn.Module):
    """Two readouts of one hidden layer that share their weight (each with its own bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 10)
        self.act = nn.GELU()
        self.left = nn.Linear(10, 3)
        self.right = nn.Linear(10, 3)
        self.right.weight = self.left.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.act(self.fc1(x))
        return self.left(hidden) + self.right(hidden)


def test_maps_with_a_shared_weight_are_skipped_and_left_unchanged():
    model = seeded(SharedReadout).double()
    space = nasframe.convert(model)
    space.select({"fc1.out_features": 6})
    state = copy.deepcopy(model.state_dict())
    report = nasframe.reconstruct(space, batches_for(4), run, "lsq")
    assert report.reconstructed == []
    assert "shared with right" in report.skipped["left"]
    assert "shared with left" in report.skipped["right"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name])


def test_readers_of_a_normalised_stream_are_skipped_and_the_ffn_outputs_repaired():
    space = nasframe.convert(seeded(ResidualMLP, 4, 8, [10, 6], 3).double())
    stream = next(name for name in space.hparams if name.startswith("inp"))
    space.select({stream: 5, "blocks.0.fc1.out_features": 4})
    report = nasframe.reconstruct(space, batches_for(4), run, "bias")
    assert report.reconstructed == ["blocks.0.fc2"]
    for reader in ("blocks.0.fc1", "blocks.1.fc1", "head"):
        assert "normalises its input dimension" in report.skipped[reader]
    assert report.skipped["blocks.1.fc2"] == "nothing of its input is pruned"


def test_the_selected_config_and_training_flags_are_restored():
    space = mlp_space(widths=(16, 12))
    space.model.train()
    space.model.layers[1].eval()  # mixed flags come back as they were
    config = {"layers.0.out_features": 5, "layers.1.out_features": 7}
    space.select(config)
    seen = []

    def forward(model, batch):
        seen.append((space.config(), model.training, model.layers[1].training))
        return model(batch)

    nasframe.reconstruct(space, batches_for(6, count=2), forward, "lsq")
    assert seen == [(space.max_config(), False, False)] * 2
    assert space.config() == config
    assert space.model.training and not space.model.layers[1].training
    assert space.model.layers[0].training


def test_a_failing_forward_restores_everything_and_changes_no_weight():
    space = mlp_space(widths=(16, 12))
    space.model.train()
    config = {"layers.0.out_features": 5, "layers.1.out_features": 7}
    space.select(config)
    state = copy.deepcopy(space.model.state_dict())

    def forward(model, batch):
        raise RuntimeError("the batch is broken")

    with pytest.raises(RuntimeError, match="the batch is broken"):
        nasframe.reconstruct(space, batches_for(6), forward, "lsq")
    assert space.config() == config and space.model.training
    assert all(not module._forward_pre_hooks for module in space.model.modules())
    for name, value in space.model.state_dict().items():
        assert torch.equal(value, state[name])
