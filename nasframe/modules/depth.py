"""Depth as an hparam: a list of residual blocks of which only the kept ones run.

A transformer's layers live in an ``nn.ModuleList`` that the model's forward iterates. The
dynamic list keeps every layer (and its parameters) but iterates only the kept ones, so
removing a layer is exactly skipping it. Layers are never reordered: a smaller depth keeps
the most important layers in their original order.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from nasframe.space.dynamic import DynamicModule


class DynamicLayerList(nn.ModuleList, DynamicModule):
    """``nn.ModuleList`` of layers whose count is the ``depth`` slot.

    Iterating (and slicing, as ``layers[: config.num_hidden_layers]`` does) yields the kept
    layers; integer indexing and ``len`` still see every layer, as do ``named_modules`` and
    ``state_dict``, so a full-size checkpoint loads into it unchanged.
    """

    SLOTS = {"depth": ()}

    @classmethod
    def convert(cls, module: nn.Module) -> DynamicLayerList:
        assert isinstance(module, nn.ModuleList)
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        for name, layer in module._modules.items():
            new._modules[name] = layer
        new.train(module.training)
        new._init_slots()
        return new

    def slot_size(self, slot: str) -> int:
        return len(self._modules)

    def unit_modules(self, slot: str) -> list[nn.Module]:
        return list(self._modules.values())

    def kept_layers(self) -> list[nn.Module]:
        layers = list(self._modules.values())
        hparam = self.get_hparam("depth")
        if hparam is None or hparam.active == hparam.max:
            return layers
        return [layers[i] for i in sorted(hparam.kept_positions(hparam.active))]

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self.kept_layers())

    def __getitem__(self, index: int | slice) -> nn.Module | list[nn.Module]:
        if isinstance(index, slice):
            return self.kept_layers()[index]
        return super().__getitem__(index)

    def export(self) -> nn.ModuleList:
        return nn.ModuleList(self.kept_layers())
