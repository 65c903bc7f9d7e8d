"""convert, export and load take their registries as arguments: with registries passed in
they need no plugin manager, and a family passed in describes, prepares and finalizes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

import nasframe
import nasframe.plugins
from nasframe.io.serialization import load
from nasframe.modules.linear import DynamicLinear
from nasframe.space.convert import ConvertRegistry, convert
from nasframe.space.export import export
from nasframe.space.family import ModelFamily, finalizer, leave_as_is
from nasframe.space.ties import TieAnalysis

ROOT = Path(__file__).resolve().parents[2]
PLAIN_REGISTRY = ConvertRegistry(
    dynamic_types={nn.Linear: DynamicLinear}, passthrough_types=(nn.ReLU,)
)


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Untraceable(MLP):
    """An MLP torch.fx cannot trace (a data-dependent branch): only a family can describe it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 1e9:
            return x
        return super().forward(x)


class MLPFamily:
    """A family for ``Untraceable`` that records what the library asked of it."""

    name = "test-mlp"

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, Untraceable)

    def describe(self, model: nn.Module) -> TieAnalysis:
        self.calls.append(("describe", isinstance(model.fc1, DynamicLinear)))
        return TieAnalysis(
            groups=[[("fc1", "out_features"), ("fc2", "in_features")]],
            frozen_slots=[("fc1", "in_features"), ("fc2", "out_features")],
            used_modules=["fc1", "fc2"],
            group_names=["hidden"],
        )

    def prepare(self, model: nn.Module) -> None:
        self.calls.append(("prepare", isinstance(model.fc1, DynamicLinear)))

    def finalize_export(self, model: nn.Module) -> None:
        self.calls.append(("finalize", isinstance(model.fc1, DynamicLinear)))
        model.exported_hidden = model.fc1.out_features


def _refuse_the_plugin_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise AssertionError("the plugin manager was asked")

    monkeypatch.setattr(nasframe.plugins, "get_plugin_manager", refuse)


@pytest.fixture
def no_plugin_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any lookup through the plugin manager fails the test."""
    _refuse_the_plugin_manager(monkeypatch)


def test_convert_and_export_with_explicit_registries_need_no_plugin_manager(
    no_plugin_manager,
) -> None:
    torch.manual_seed(0)
    model = MLP()
    x = torch.randn(5, 4)
    expected = model(x)
    space = convert(model, {"*": {"ratios": [0.5, 1.0]}}, registry=PLAIN_REGISTRY)
    assert set(space.hparams) == {"fc1.out_features"}
    space.select({"fc1.out_features": 4})
    plain = export(space, finalize=leave_as_is)
    assert plain.fc1.out_features == 4 and not isinstance(plain.fc1, DynamicLinear)
    space.select({"fc1.out_features": 8})
    torch.testing.assert_close(export(space, finalize=leave_as_is)(x), expected)


def test_a_family_passed_in_describes_prepares_the_converted_model_and_finalizes_it(
    no_plugin_manager,
) -> None:
    family = MLPFamily()
    assert isinstance(family, ModelFamily)
    registry = ConvertRegistry({nn.Linear: DynamicLinear}, families=(family,))
    space = convert(Untraceable(), registry=registry)
    assert set(space.hparams) == {"hidden"}
    # described before the swap, prepared after it
    assert family.calls == [("describe", False), ("prepare", True)]
    space.select({"hidden": 2})
    plain = export(space, finalize=finalizer([family]))
    assert family.calls[-1] == ("finalize", False) and plain.exported_hidden == 2


def test_the_finalizer_leaves_models_no_family_claims_alone() -> None:
    family = MLPFamily()
    finalizer([family])(MLP())
    assert family.calls == []


def test_load_with_explicit_registries_needs_no_plugin_manager(tmp_path, monkeypatch) -> None:
    torch.manual_seed(0)
    space = nasframe.convert(MLP())
    space.select({"fc1.out_features": 5})
    pruned = nasframe.export(space)
    nasframe.save(pruned, tmp_path, space.config(), architecture={"name": "mlp"})
    _refuse_the_plugin_manager(monkeypatch)
    loaded = load(
        tmp_path, registry=PLAIN_REGISTRY, finalize=leave_as_is, architectures={"mlp": MLP}
    )
    assert loaded.fc1.out_features == 5 and not loaded.training
    x = torch.randn(2, 4)
    torch.testing.assert_close(loaded(x), pruned(x))


def test_the_public_calls_pass_the_installed_registries_down() -> None:
    torch.manual_seed(0)
    space = nasframe.convert(MLP())
    assert isinstance(space.model.fc1, DynamicLinear)
    assert nasframe.convert is nasframe.api.convert and nasframe.export is nasframe.api.export
    assert nasframe.load is nasframe.api.load
    assert nasframe.export(space).fc1.out_features == 8


@pytest.mark.parametrize(
    "relative",
    ["nasframe/space/convert.py", "nasframe/space/export.py", "nasframe/io/serialization.py"],
)
def test_the_layers_below_the_api_never_import_the_plugin_manager(relative: str) -> None:
    tree = ast.parse((ROOT / relative).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert "nasframe.plugins" not in imported
