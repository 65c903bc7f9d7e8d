"""Depth as an hparam: a list of residual blocks of which only the kept ones run.

A transformer's layers live in an ``nn.ModuleList`` that the model's forward iterates. The
dynamic list keeps every layer (and its parameters) but shows only the kept ones, so removing
a layer is exactly skipping it. Layers are never reordered: a smaller depth keeps the most
important layers in their original order.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import Any, NoReturn

from torch import nn

from nasframe.space.dynamic import DynamicModule


class DynamicLayerList(nn.ModuleList, DynamicModule):
    """``nn.ModuleList`` of layers whose count is the ``depth`` slot.

    As a sequence it *is* the kept layers: iteration, ``len``, integer indexing and slicing
    (as ``layers[: config.num_hidden_layers]`` does) all see them, so a model's forward sees
    one consistent shorter list. :meth:`all_layers` gives every layer, as ``named_modules``
    and ``state_dict`` do, so a full-size checkpoint loads into it unchanged. The layers are
    fixed at conversion: the list methods that would add or remove one raise.
    """

    SLOTS = {"depth": ()}

    @classmethod
    def convert(cls, module: nn.Module) -> DynamicLayerList:
        cls.check_convertible(module, nn.ModuleList)
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        for name, layer in module._modules.items():
            new._modules[name] = layer
        new.train(module.training)
        return new

    def slot_size(self, slot: str) -> int:
        return len(self._modules)

    def all_layers(self) -> list[nn.Module]:
        """Every layer, kept or not, in order (what the full-size model runs)."""
        return list(self._modules.values())

    def unit_modules(self, slot: str) -> list[nn.Module]:
        return self.all_layers()

    def kept_layers(self) -> list[nn.Module]:
        """The layers the active depth keeps, in their original order."""
        layers = self.all_layers()
        hparam = self.get_hparam("depth")
        if hparam is None or hparam.active == hparam.max:
            return layers
        return [layers[i] for i in sorted(hparam.kept_positions(hparam.active))]

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self.kept_layers())

    def __len__(self) -> int:
        return len(self.kept_layers())

    def __getitem__(self, index: int | slice) -> nn.Module | list[nn.Module]:
        kept = self.kept_layers()
        if isinstance(index, slice):
            return kept[index]
        return kept[operator.index(index)]

    def _fixed(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(
            "a DynamicLayerList's layers are fixed when it is converted; change the depth "
            "through its hparam, or edit the plain model before nasframe.convert."
        )

    append = extend = insert = pop = __setitem__ = __delitem__ = __iadd__ = _fixed

    def export(self) -> nn.ModuleList:
        return nn.ModuleList(self.kept_layers())
