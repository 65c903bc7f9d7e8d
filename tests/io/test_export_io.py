"""Saving and loading pruned models: safetensors + JSON, round trips, and refused inputs."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
import safetensors.torch
import torch
from models import ResidualMLP, TiedLM, input_for, seeded

from nasframe import UserInputError, convert, export, load, save
from nasframe.app.byte_mlp import ByteMLPLM

VOCAB, DIM, HIDDENS = 11, 6, [5, 7]
CONFIG = {"emb.embedding_dim": 4, "blocks.0.fc1.out_features": 3, "blocks.1.fc1.out_features": 7}


def pruned_lm(seed: int = 0):
    """An exported TiedLM whose kept units are not a prefix, and its config."""
    space = convert(seeded(TiedLM, VOCAB, DIM, HIDDENS, seed=seed))
    generator = torch.Generator().manual_seed(seed)
    for hparam in space.all_hparams.values():
        hparam.importance = torch.rand(hparam.max, generator=generator)
    space.select(CONFIG)
    return export(space), space.config()


@pytest.fixture
def saved(tmp_path):
    exported, config = pruned_lm()
    directory = save(exported, tmp_path / "pruned", config, extra={"note": "test"})
    return directory, exported


def test_round_trip_restores_the_exported_model(saved) -> None:
    directory, exported = saved
    # Any unpruned instance of the architecture will do: every weight comes from the file.
    loaded = load(directory, model=seeded(TiedLM, VOCAB, DIM, HIDDENS, seed=123))
    ids = input_for(exported)
    assert torch.equal(loaded(ids), exported(ids))
    assert loaded.head.weight is loaded.emb.weight  # still tied
    assert loaded.emb.weight.shape == (VOCAB, 4)
    assert loaded.blocks[0].fc1.out_features == 3


def test_files_are_safetensors_and_json_without_pickles(saved) -> None:
    directory, exported = saved
    assert sorted(p.name for p in directory.iterdir()) == ["model.safetensors", "nasframe.json"]
    raw = (directory / "model.safetensors").read_bytes()
    (header_size,) = struct.unpack("<Q", raw[:8])  # safetensors: u64 header size, JSON header
    header = json.loads(raw[8 : 8 + header_size])
    assert "emb.weight" in header and "head.weight" not in header  # the tied weight once
    assert not raw.startswith(b"\x80") and not raw.startswith(b"PK")  # not a pickle or zip
    tensors = safetensors.torch.load_file(directory / "model.safetensors")
    assert torch.equal(tensors["emb.weight"], exported.emb.weight)

    metadata = json.loads((directory / "nasframe.json").read_text())
    assert metadata["format"] == "nasframe-pruned"
    assert metadata["config"] == CONFIG
    assert metadata["extra"] == {"note": "test"}
    assert metadata["weights"]["file"] == "model.safetensors"
    assert metadata["weights"]["sha256"] == hashlib.sha256(raw).hexdigest()


def test_registered_models_load_without_passing_a_model(tmp_path) -> None:
    kwargs = {"context": 2, "dim": 8, "hidden": 12, "layers": 1, "vocab_size": 20}
    space = convert(seeded(ByteMLPLM, **kwargs))
    config = {name: hp.choices[len(hp.choices) // 2] for name, hp in space.hparams.items()}
    space.select(config)
    exported = export(space)
    save(exported, tmp_path, config, architecture={"name": "byte-mlp", "kwargs": kwargs})
    loaded = load(tmp_path)
    ids = torch.randint(0, 20, (2, 9))
    assert torch.equal(loaded(ids), exported(ids))


def test_a_custom_model_needs_model_to_load(saved) -> None:
    directory, _ = saved
    with pytest.raises(UserInputError) as error:
        load(directory)
    assert "saved from a custom model" in str(error.value)
    assert "load(directory, model=...)" in str(error.value)


def test_corrupted_weights_are_refused(saved) -> None:
    directory, _ = saved
    path = directory / "model.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(
        UserInputError, match="does not match nasframe.json.*export the model again"
    ):
        load(directory, model=seeded(TiedLM, VOCAB, DIM, HIDDENS))


def test_missing_weights_are_refused(saved) -> None:
    directory, _ = saved
    (directory / "model.safetensors").unlink()
    with pytest.raises(UserInputError, match="is missing or does not match"):
        load(directory, model=seeded(TiedLM, VOCAB, DIM, HIDDENS))


def test_a_pickle_in_place_of_the_weights_is_never_unpickled(saved, tmp_path) -> None:
    directory, _ = saved
    path = directory / "model.safetensors"
    torch.save({"emb.weight": torch.zeros(VOCAB, 4)}, path)
    metadata = json.loads((directory / "nasframe.json").read_text())
    metadata["weights"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (directory / "nasframe.json").write_text(json.dumps(metadata))
    with pytest.raises(UserInputError, match="does not fit the rebuilt model"):
        load(directory, model=seeded(TiedLM, VOCAB, DIM, HIDDENS))


@pytest.mark.parametrize(
    ("model", "message"),
    [
        # Another vocabulary: the shapes differ.
        (lambda: seeded(TiedLM, VOCAB + 1, DIM, HIDDENS), r"size mismatch for emb.weight"),
        # Same shapes but the head is not tied: its weight is not in the file.
        (lambda: seeded(TiedLM, VOCAB, DIM, HIDDENS, tied=False), r"missing \['head.weight'\]"),
        # Another architecture altogether: its hparams differ.
        (
            lambda: seeded(ResidualMLP, 4, DIM, HIDDENS, 3),
            r"unknown hparam\(s\) .*emb.embedding_dim",
        ),
    ],
)
def test_a_model_that_does_not_fit_the_weights_is_refused(saved, model, message) -> None:
    directory, _ = saved
    with pytest.raises(UserInputError, match=message):
        load(directory, model=model())


def test_missing_or_foreign_metadata_is_refused(saved, tmp_path) -> None:
    directory, _ = saved
    with pytest.raises(UserInputError, match="holds no nasframe.json"):
        load(tmp_path / "empty", model=seeded(TiedLM, VOCAB, DIM, HIDDENS))
    meta = directory / "nasframe.json"
    meta.write_text("{oops")
    with pytest.raises(UserInputError, match="is not valid JSON"):
        load(directory, model=seeded(TiedLM, VOCAB, DIM, HIDDENS))
    meta.write_text(json.dumps({"format": "something-else", "version": 1}))
    with pytest.raises(UserInputError, match="is not a nasframe model of version 1"):
        load(directory, model=seeded(TiedLM, VOCAB, DIM, HIDDENS))


def test_export_keeps_train_mode_and_leaves_the_space_alone() -> None:
    space = convert(seeded(TiedLM, VOCAB, DIM, HIDDENS))
    space.model.train()
    space.select(CONFIG)
    exported = export(space)
    assert all(m.training for m in exported.modules())
    assert space.model.emb.weight.shape == (VOCAB, DIM)  # full weights still in the space
    inplace = export(space, inplace=True)
    assert inplace is space.model
