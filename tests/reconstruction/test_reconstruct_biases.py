"""Biases reconstruction adds to bias-free maps: they survive export and nasframe.save/load,
and a file without them (or with a bad entry) is read as it should be."""

from __future__ import annotations

import json

import pytest
import torch
from models import seeded
from reconstruction_support import batches_for, outputs, run
from torch import nn

import nasframe
from nasframe.errors import UserInputError


def biasless() -> nn.Module:
    def build() -> nn.Module:
        return nn.Sequential(nn.Linear(6, 16, bias=False), nn.GELU(), nn.Linear(16, 3, bias=False))

    return seeded(build).double()


def test_an_added_bias_survives_export_and_nasframe_save_and_load(tmp_path):
    model = biasless()
    space = nasframe.convert(model)
    space.select({"0.out_features": 7})
    batches = batches_for(6)
    report = nasframe.reconstruct(space, batches, run, "lsq")
    assert report.added_biases == {"2.bias": 3} == space.added_biases
    assert model[2].bias is not None and model[2].bias.dtype == torch.float64
    exported = nasframe.export(space)
    assert exported[2].bias is not None and exported[2].in_features == 7
    torch.testing.assert_close(outputs(exported, batches), outputs(model, batches), rtol=0, atol=0)
    nasframe.save(exported, tmp_path / "nf", space.config(), added_biases=space.added_biases)
    metadata = json.loads((tmp_path / "nf" / "nasframe.json").read_text(encoding="utf-8"))
    assert metadata["added_biases"] == {"2.bias": 3}
    loaded = nasframe.load(tmp_path / "nf", model=biasless())
    torch.testing.assert_close(outputs(loaded, batches), outputs(exported, batches), rtol=0, atol=0)


def test_a_file_without_added_biases_still_loads_and_a_bad_entry_is_refused(tmp_path):
    model = biasless()
    space = nasframe.convert(model)
    space.select({"0.out_features": 7})
    nasframe.save(nasframe.export(space), tmp_path / "nf", space.config())
    metadata_path = tmp_path / "nf" / "nasframe.json"
    metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
    del metadata["added_biases"]  # as written before reconstruction existed
    metadata_path.write_text(json.dumps(metadata), encoding="utf-8")
    nasframe.load(tmp_path / "nf", model=biasless())
    metadata["added_biases"] = {"9.bias": 3}
    metadata_path.write_text(json.dumps(metadata), encoding="utf-8")
    with pytest.raises(UserInputError, match="adds a bias '9.bias'"):
        nasframe.load(tmp_path / "nf", model=biasless())
