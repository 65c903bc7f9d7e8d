"""Export holds no second full copy of the weights (issue 15): a copy is a skeleton whose
sliced weights are the space's own until each module exports its kept part, and an export in
place frees each full-size module once its plain module replaces it."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from models import ResidualMLP, seeded

from nasframe import convert, export
from nasframe.modules.linear import DynamicLinear

DIM, HIDDENS = 96, [384] * 6


def live_tensor_bytes() -> int:
    """Bytes of every distinct tensor storage alive in the process."""
    gc.collect()
    storages: dict[int, int] = {}
    for obj in gc.get_objects():
        # issubclass on the type: isinstance would ask some proxies for __class__.
        if issubclass(type(obj), torch.Tensor) and obj.device.type == "cpu":
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def half_space():
    """A residual MLP whose hidden and FFN widths are cut to half, unsorted (the export
    gathers rows rather than slicing a prefix)."""
    space = convert(seeded(ResidualMLP, 16, DIM, HIDDENS, 10))
    generator = torch.Generator().manual_seed(0)
    for hparam in space.all_hparams.values():
        hparam.importance = torch.rand(hparam.max, generator=generator)
    space.select({name: hp.max // 2 for name, hp in space.hparams.items()})
    return space


def model_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


@pytest.fixture
def peaks(monkeypatch):
    """Live tensor bytes measured right after every DynamicLinear export."""
    seen: list[int] = []
    original = DynamicLinear.export

    def measured(self):
        plain = original(self)
        seen.append(live_tensor_bytes())
        return plain

    monkeypatch.setattr(DynamicLinear, "export", measured)
    return seen


def test_a_copy_holds_the_space_and_the_kept_weights_only(peaks) -> None:
    space = half_space()
    largest = max(model_bytes(m) for m in space.model.modules() if isinstance(m, DynamicLinear))
    before = live_tensor_bytes()
    exported = export(space)
    kept = model_bytes(exported)
    # The old deep copy held a second full model (here 1x more): the skeleton holds only the
    # plain modules' weights (the norms) and the kept parts exported so far.
    plain_weights = sum(
        p.numel() * p.element_size()
        for m in space.model.modules()
        if not list(m.children()) and not isinstance(m, DynamicLinear)
        for p in m.parameters()
    )
    assert max(peaks) - before <= kept + plain_weights + largest
    assert kept < model_bytes(space.model) / 2
    # The space is untouched and shares nothing with the export.
    space_storages = {p.untyped_storage().data_ptr() for p in space.model.parameters()}
    assert not space_storages & {p.untyped_storage().data_ptr() for p in exported.parameters()}


def test_in_place_frees_each_full_size_module_as_it_goes(peaks) -> None:
    space = half_space()
    linears = [m for m in space.model.modules() if isinstance(m, DynamicLinear)]
    largest = max(model_bytes(m) for m in linears)
    full = [weakref.ref(m.weight) for m in linears]
    del linears
    before = live_tensor_bytes()
    exported = export(space, inplace=True)
    # At any time: the modules not yet exported, the ones exported (half the size or less)
    # and one module being sliced; never the full model plus its export.
    assert max(peaks) - before <= largest
    assert all(ref() is None for ref in full)
    assert live_tensor_bytes() - before < 0
    assert exported is space.model


def test_a_copy_unshares_weights_a_plain_module_shares_with_a_dynamic_one() -> None:
    space = convert(seeded(ResidualMLP, 16, DIM, [32], 10))
    # A plain (unconverted) module that holds a dynamic module's weight: the copy must own it.
    space.model.extra = torch.nn.Module()
    space.model.extra.register_parameter("shared", space.model.head.weight)
    exported = export(space)
    assert exported.extra.shared is not space.model.head.weight
    assert torch.equal(exported.extra.shared, space.model.head.weight)
