"""``DynamicLayerList`` is one consistent sequence of the kept layers: iteration, ``len``,
integer indexing and slicing agree for every depth and importance order; ``all_layers``
(and the module tree, so checkpoints) still hold every layer."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nasframe.modules.depth import DynamicLayerList
from nasframe.space.hparam import Hparam

LAYERS = 6


@st.composite
def layer_lists(draw):
    layers = nn.ModuleList(nn.Linear(2, 2) for _ in range(LAYERS))
    dynamic = DynamicLayerList.convert(layers)
    hparam = Hparam(LAYERS, name="depth")
    hparam.permutable = False
    order = draw(st.permutations(range(LAYERS)))
    hparam.importance = torch.tensor([float(LAYERS - order.index(i)) for i in range(LAYERS)])
    dynamic.set_hparam("depth", hparam)
    hparam.active = draw(st.integers(1, LAYERS))
    return layers, dynamic, hparam


@settings(max_examples=60, deadline=None)
@given(case=layer_lists(), data=st.data())
def test_every_view_sees_the_same_kept_layers(case, data) -> None:
    layers, dynamic, hparam = case
    kept = dynamic.kept_layers()
    assert len(kept) == hparam.active
    positions = [list(layers).index(layer) for layer in kept]
    assert positions == sorted(hparam.kept_positions(hparam.active))  # original order
    assert list(dynamic) == kept
    assert len(dynamic) == len(kept)
    assert [dynamic[i] for i in range(len(dynamic))] == kept
    assert [dynamic[-i] for i in range(1, len(dynamic) + 1)] == kept[::-1]
    start = data.draw(st.integers(-LAYERS - 1, LAYERS + 1), label="start")
    stop = data.draw(st.integers(-LAYERS - 1, LAYERS + 1), label="stop")
    step = data.draw(st.sampled_from([1, 2, -1]), label="step")
    assert dynamic[start:stop:step] == kept[start:stop:step]
    with pytest.raises(IndexError):
        dynamic[len(kept)]
    assert dynamic.all_layers() == list(layers)
    assert dynamic.unit_modules("depth") == list(layers)
    assert len(list(dynamic.children())) == LAYERS
    assert len(dynamic.state_dict()) == 2 * LAYERS
    assert list(dynamic.export()) == kept


def test_the_layers_are_fixed_after_conversion() -> None:
    dynamic = DynamicLayerList.convert(nn.ModuleList([nn.Linear(2, 2)]))
    for change in (
        lambda: dynamic.append(nn.Linear(2, 2)),
        lambda: dynamic.extend([nn.Linear(2, 2)]),
        lambda: dynamic.insert(0, nn.Linear(2, 2)),
        lambda: dynamic.pop(0),
    ):
        with pytest.raises(TypeError, match="fixed when it is converted"):
            change()
    with pytest.raises(TypeError, match="fixed when it is converted"):
        dynamic[0] = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="fixed when it is converted"):
        del dynamic[0]
    assert len(dynamic.all_layers()) == 1
