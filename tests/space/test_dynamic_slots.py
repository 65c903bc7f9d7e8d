"""Slot tables: the class's ``SLOTS`` is never shadowed on an instance, an instance with
size-dependent dimensions declares them, and slot hparams need no initialisation call."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from nasframe.modules.attention import DynamicMultiheadAttention
from nasframe.modules.linear import DynamicLinear
from nasframe.space.dynamic import DynamicModule, SlotDim
from nasframe.space.hparam import Hparam


def test_instance_slots_never_shadow_the_class_table() -> None:
    class_table = dict(DynamicMultiheadAttention.SLOTS)
    module = DynamicMultiheadAttention.convert(nn.MultiheadAttention(8, 2))
    assert "SLOTS" not in vars(module)
    assert class_table == DynamicMultiheadAttention.SLOTS
    assert set(module.slots) == set(DynamicMultiheadAttention.SLOTS)
    assert module.slots["num_heads"][0] == SlotDim("in_proj_weight", 0, 4, 3)
    assert module.slot_size("num_heads") == 2 and module.slot_size("embed_dim") == 8


def test_a_plain_dynamic_module_reads_the_class_table() -> None:
    module = DynamicLinear.convert(nn.Linear(3, 5))
    assert module.slots is DynamicLinear.SLOTS


def test_declared_slots_must_name_the_class_slots() -> None:
    module = DynamicMultiheadAttention.convert(nn.MultiheadAttention(8, 2))
    with pytest.raises(TypeError, match="declare the same slot names"):
        module.declare_slots({"num_heads": ()})


class Scale(DynamicModule):
    """A dynamic module built without any slot initialisation call."""

    SLOTS = {"width": (SlotDim("weight", 0),)}

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sliced("weight")


def test_slot_hparams_initialise_themselves() -> None:
    module = Scale()
    assert module.get_hparam("width") is None
    assert module.active_size("width") == 4
    hparam = Hparam(4, name="width")
    module.set_hparam("width", hparam)
    hparam.active = 2
    assert module(torch.ones(2)).shape == (2,)
    with pytest.raises(KeyError):
        module.get_hparam("depth")


def test_adopted_modules_initialise_themselves_and_copies_keep_their_hparams() -> None:
    module = Scale.__new__(Scale)  # as _adopt and plugins build them: no __init__ at all
    nn.Module.__init__(module)
    module.weight = nn.Parameter(torch.ones(4))
    module.set_hparam("width", Hparam(4, name="width"))
    copied = copy.deepcopy(module)
    assert copied.get_hparam("width").max == 4
    assert copied.get_hparam("width") is not module.get_hparam("width")
