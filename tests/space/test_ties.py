"""Tie discovery: which dimensions shrink together, and which must never shrink."""

from __future__ import annotations

import copy
import random
import warnings

import pytest
import torch
from models import MLP, RawResidualMLP, TiedLM, input_for, seeded
from torch import nn

from nasframe import CostModel, DynamicModule, UserInputError, convert, export


def slots(space, name: str) -> set[tuple[str, str]]:
    return {(module_name, slot) for module_name, _, slot in space.slots_of(space.all_hparams[name])}


def convert_quietly(model: nn.Module):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # these models must convert without any warning
        return convert(model)


def test_linear_gelu_linear_has_one_hparam_for_its_hidden_width() -> None:
    model = nn.Sequential(nn.Linear(4, 16), nn.GELU(), nn.Linear(16, 3))
    space = convert_quietly(model)
    assert list(space.all_hparams) == ["0.out_features"]
    assert slots(space, "0.out_features") == {("0", "out_features"), ("2", "in_features")}
    # The model's input and output widths are frozen.
    assert space.model[0].get_hparam("in_features") is None
    assert space.model[2].get_hparam("out_features") is None


def test_residual_stream_after_an_embedding_is_one_tied_hparam() -> None:
    model = seeded(TiedLM, 10, 8, [6, 5], tied=False)
    space = convert_quietly(model)
    assert set(space.all_hparams) == {
        "emb.embedding_dim",
        "blocks.0.fc1.out_features",
        "blocks.1.fc1.out_features",
    }
    stream = space.all_hparams["emb.embedding_dim"]
    assert slots(space, "emb.embedding_dim") == {
        ("emb", "embedding_dim"),
        ("blocks.0.norm", "normalized_shape"),
        ("blocks.0.fc1", "in_features"),
        ("blocks.0.fc2", "out_features"),
        ("blocks.1.norm", "normalized_shape"),
        ("blocks.1.fc1", "in_features"),
        ("blocks.1.fc2", "out_features"),
        ("norm", "normalized_shape"),
        ("head", "in_features"),
    }
    m = space.model
    for module, slot in [(m.emb, "embedding_dim"), (m.norm, "normalized_shape")]:
        assert module.get_hparam(slot) is stream
    for block in m.blocks:
        assert block.norm.get_hparam("normalized_shape") is stream
        assert block.fc1.get_hparam("in_features") is stream
        assert block.fc2.get_hparam("out_features") is stream
    assert m.head.get_hparam("out_features") is None  # the vocabulary is the output
    # Shrinking the stream shrinks every module on it, so the model still runs.
    space.select({"emb.embedding_dim": 3})
    ids = input_for(model)
    assert space.model(ids).shape == (4, 5, 10)
    assert export(space).norm.normalized_shape == (3,)


def test_residual_stream_over_raw_input_features_is_frozen() -> None:
    model = seeded(RawResidualMLP, 6, [5, 7], 2)
    space = convert_quietly(model)
    assert set(space.all_hparams) == {"blocks.0.fc1.out_features", "blocks.1.fc1.out_features"}
    assert set(space.hparams) == set(space.all_hparams)
    m = space.model
    for block in m.blocks:
        assert block.norm.get_hparam("normalized_shape") is None
        assert block.fc1.get_hparam("in_features") is None
        assert block.fc2.get_hparam("out_features") is None
    assert m.norm.get_hparam("normalized_shape") is None
    assert m.head.get_hparam("in_features") is None
    # Whatever the config, the stream keeps its full width everywhere.
    x = input_for(model)
    rng = random.Random(0)
    for _ in range(5):
        space.sample(rng)
        exported = export(space)
        assert exported.norm.normalized_shape == (6,)
        assert all(b.fc2.out_features == 6 and b.fc1.in_features == 6 for b in exported.blocks)
        torch.testing.assert_close(exported(x), space.model(x), atol=1e-5, rtol=0)


def test_swiglu_gate_ties_the_gate_and_up_projections() -> None:
    class SwiGLU(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate, self.up, self.down = nn.Linear(4, 8), nn.Linear(4, 8), nn.Linear(8, 4)

        def forward(self, x):
            return self.down(nn.functional.silu(self.gate(x)) * self.up(x))

    space = convert_quietly(SwiGLU())
    assert list(space.all_hparams) == ["gate.out_features"]
    assert slots(space, "gate.out_features") == {
        ("gate", "out_features"),
        ("up", "out_features"),
        ("down", "in_features"),
    }


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 3), nn.Linear(4, 5), nn.Linear(8, 2)
        self.d, self.e = nn.Linear(2, 6), nn.Linear(6, 2)

    def forward(self, x):
        h = self.c(torch.cat([self.a(x), self.b(x)], dim=-1))
        return self.e(torch.relu(self.d(h)))


class Reshape(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(3, 2)
        self.c, self.d = nn.Linear(4, 5), nn.Linear(5, 4)

    def forward(self, x):
        h = self.a(x).reshape(x.shape[0], 2, 3)
        return self.b(h).flatten(1) + self.d(self.c(x).relu())


@pytest.mark.parametrize(
    ("model", "frozen", "searchable"),
    [
        (
            Concat(),
            [("a", "out_features"), ("b", "out_features"), ("c", "in_features")],
            ["c", "d"],
        ),
        (Reshape(), [("a", "out_features"), ("b", "in_features")], ["c"]),
    ],
)
def test_concat_and_reshape_freeze_the_dimensions_they_touch(model, frozen, searchable) -> None:
    space = convert_quietly(model)
    for module_name, slot in frozen:
        assert space.model.get_submodule(module_name).get_hparam(slot) is None
    assert list(space.all_hparams) == [f"{name}.out_features" for name in searchable]
    x = torch.randn(3, 4)
    reference = space.model(x)
    space.select(space.min_config())
    assert space.model(x).shape == reference.shape
    torch.testing.assert_close(export(space)(x), space.model(x), atol=1e-5, rtol=0)


def test_a_module_used_twice_shares_one_hparam() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp, self.shared, self.out = nn.Linear(3, 6), nn.Linear(6, 6), nn.Linear(6, 2)

        def forward(self, x):
            h = torch.relu(self.inp(x))
            h = torch.relu(self.shared(h))
            h = torch.relu(self.shared(h))
            return self.out(h)

    space = convert_quietly(seeded(Twice))
    assert list(space.all_hparams) == ["inp.out_features"]
    assert slots(space, "inp.out_features") == {
        ("inp", "out_features"),
        ("shared", "in_features"),
        ("shared", "out_features"),
        ("out", "in_features"),
    }
    x = torch.randn(5, 3)
    hparam = space.all_hparams["inp.out_features"]
    hparam.importance = torch.tensor([0.3, 0.1, 0.9, 0.5, 0.2, 0.7])
    space.select({"inp.out_features": 3})
    exported = export(space)
    assert exported.shared.weight.shape == (3, 3)
    pruned = space.model(x)
    torch.testing.assert_close(exported(x), pruned, atol=1e-5, rtol=0)
    # Sorting permutes both dimensions of the shared weight consistently.
    space.select(space.max_config())
    full = space.model(x)
    space.sort_parameters()
    torch.testing.assert_close(space.model(x), full, atol=1e-5, rtol=0)
    space.select({"inp.out_features": 3})
    torch.testing.assert_close(space.model(x), pruned, atol=1e-5, rtol=0)


def test_tied_embedding_and_head_stay_consistent() -> None:
    model = seeded(TiedLM, 12, 8, [6])
    ids = input_for(model)
    reference = model(ids)
    space = convert_quietly(model)
    m = space.model
    assert m.head.weight is m.emb.weight
    assert m.emb.get_hparam("embedding_dim") is m.head.get_hparam("in_features")
    assert torch.equal(m(ids), reference)

    stream = space.all_hparams["emb.embedding_dim"]
    stream.importance = torch.tensor([0.5, 0.1, 0.8, 0.3, 0.9, 0.2, 0.4, 0.7])
    space.select({"emb.embedding_dim": 5, "blocks.0.fc1.out_features": 4})
    exported = export(space)
    assert exported.head.weight is exported.emb.weight
    assert exported.emb.weight.shape == (12, 5)
    torch.testing.assert_close(exported(ids), m(ids), atol=1e-5, rtol=0)

    # The tied weight is one parameter: counted once, permuted once by sorting.
    assert CostModel(space).params() == sum(p.numel() for p in exported.parameters())
    space.select(space.max_config())
    space.sort_parameters()
    assert m.head.weight is m.emb.weight
    torch.testing.assert_close(m(ids), reference, atol=1e-5, rtol=0)


class WithConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.conv, self.fc2 = (
            nn.Linear(4, 6),
            nn.Conv1d(6, 6, 3, padding=1),
            nn.Linear(6, 3),
        )
        self.fc3, self.fc4 = nn.Linear(3, 8), nn.Linear(8, 2)

    def forward(self, x):  # (batch, time, features)
        h = self.fc1(x).transpose(1, 2)
        h = self.conv(self.conv(h)).transpose(1, 2)  # used twice: still listed once
        return self.fc4(torch.relu(self.fc3(self.fc2(h))))


def test_unsupported_parameterised_modules_are_kept_and_listed_once() -> None:
    model = seeded(WithConv)
    x = torch.randn(2, 7, 4)
    reference = model(x)
    conv = model.conv
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        space = convert(model)
    messages = [str(w.message) for w in caught if "full size" in str(w.message)]
    assert len(messages) == 1
    assert messages[0].count("conv (Conv1d)") == 1
    assert "fc1" not in messages[0]
    assert space.model.conv is conv  # kept as it is
    assert space.model.fc1.get_hparam("out_features") is None  # conv's neighbours are frozen
    assert space.model.fc2.get_hparam("in_features") is None
    assert list(space.all_hparams) == ["fc2.out_features", "fc3.out_features"]
    assert torch.equal(space.model(x), reference)
    space.select(space.min_config())
    torch.testing.assert_close(export(space)(x), space.model(x), atol=1e-5, rtol=0)


def test_non_traceable_model_says_what_to_do() -> None:
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            if x.sum() > 0:  # control flow on a tensor value: torch.fx cannot trace it
                return self.fc(x)
            return x

    with pytest.raises(UserInputError) as error:
        convert(DataDependent())
    message = str(error.value)
    assert "could not trace DataDependent" in message
    assert "make its forward traceable" in message and "plugin" in message


def test_converting_twice_is_refused() -> None:
    space = convert(seeded(MLP, 3, [4], 2))
    with pytest.raises(UserInputError, match="already converted"):
        convert(space.model)


def test_converted_modules_share_the_original_parameters() -> None:
    model = seeded(MLP, 3, [4], 2)
    weights = [layer.weight for layer in model.layers]
    space = convert(model)
    assert all(isinstance(layer, DynamicModule) for layer in space.model.layers)
    new_weights = [layer.weight for layer in space.model.layers]
    assert all(a is b for a, b in zip(weights, new_weights, strict=True))


class _TiedAcrossStreams(nn.Module):
    """An input embedding tied to a head that reads another stream of the same width."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.enc = nn.Embedding(20, 8), nn.Linear(8, 6)
        self.proj, self.head = nn.Linear(6, 8), nn.Linear(8, 20, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.proj(torch.relu(self.enc(self.emb(ids))))))


def test_a_weight_tied_across_unconnected_dimensions_stays_whole() -> None:
    """Regression (found in review): an embedding tied to a head that reads another stream of
    the same width was made searchable, so pruning one side broke the tie or the function."""
    torch.manual_seed(0)
    model = _TiedAcrossStreams()
    reference = copy.deepcopy(model)
    space = convert(model)
    assert list(space.hparams) == ["enc.out_features"]
    for hparam in space.all_hparams.values():
        hparam.importance = torch.rand(hparam.max, generator=torch.Generator().manual_seed(3))
    space.sort_parameters()
    ids = torch.randint(0, 20, (3, 4))
    torch.testing.assert_close(model(ids), reference(ids), atol=1e-6, rtol=0)
    space.select({"enc.out_features": 3})
    exported = export(space)
    assert CostModel(space).params() == sum(p.numel() for p in exported.parameters())
