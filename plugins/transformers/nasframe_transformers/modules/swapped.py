"""Norms and embeddings of any class, made dynamic by lending their forward sliced weights.

A family's norm computes its own formula (Gemma's ``1 + weight``, fp32 upcasts, a learned
position embedding's offset); rather than re-implementing each, the dynamic subclass keeps
the full parameters and, for one forward, puts their slices in the module's parameter table,
so the family's own forward runs on the kept channels. The slices are views (or index
copies) of the parameters, so gradients reach the full-size parameters. Attributes that state
the width (``hidden_size``, a LayerNorm's ``normalized_shape``) follow the kept size for the
forward too, and the export stores the kept size in them. A norm without parameters (OLMo's
LayerNorm, which passes only ``normalized_shape`` to ``layer_norm``) is one of these whose
width is its only state.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch
from torch import nn

from nasframe.space.dynamic import DynamicModule, SlotDim
from nasframe_transformers.modules.wrapped import copy_plain_attributes


def _adopt_state(source: nn.Module, target: nn.Module) -> None:
    """``source``'s plain attributes, parameters and buffers (the same objects) on ``target``."""
    copy_plain_attributes(source, target, frozenset())
    for name, param in source._parameters.items():
        target.register_parameter(name, param)
    for name, buffer in source._buffers.items():
        target.register_buffer(
            name, buffer, persistent=name not in source._non_persistent_buffers_set
        )
    target.train(source.training)


class SwappedModule(DynamicModule):
    """Mixin over a plain class whose forward reads only its own parameters by name."""

    PLAIN_CLASS: ClassVar[type[nn.Module]]
    SLOT: ClassVar[str]
    DIMS: ClassVar[dict[str, int]]  # parameter -> the dimension the slot indexes
    SIZE_ATTRIBUTES: ClassVar[tuple[str, ...]] = ()  # ints that state the sliced width

    def _kept_widths(self) -> dict[str, Any]:
        """The width-stating attributes, set to the kept size (empty at full size)."""
        full, active = self.slot_size(self.SLOT), self.active_size(self.SLOT)
        if full == active:
            return {}
        state, kept = vars(self), {}
        for attribute in self.SIZE_ATTRIBUTES:
            value = state.get(attribute)
            if value == full:
                kept[attribute] = active
            elif isinstance(value, tuple | list) and tuple(value) == (full,):
                kept[attribute] = (active,)
        return kept

    @classmethod
    def convert(cls, module: nn.Module) -> SwappedModule:
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        _adopt_state(module, new)
        present = {
            name: dim for name, dim in cls.DIMS.items() if module._parameters.get(name) is not None
        }
        new.declare_slots({cls.SLOT: tuple(SlotDim(name, dim) for name, dim in present.items())})
        return new

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        full = {name: self._parameters[name] for name in self.DIMS if name in self._parameters}
        widths = self._kept_widths()
        stated = {name: vars(self)[name] for name in widths}
        try:
            for name in full:
                self._parameters[name] = self.sliced(name)
            vars(self).update(widths)
            return super().forward(*args, **kwargs)
        finally:
            self._parameters.update(full)
            vars(self).update(stated)

    def export(self) -> nn.Module:
        plain = self.PLAIN_CLASS.__new__(self.PLAIN_CLASS)
        nn.Module.__init__(plain)
        _adopt_state(self, plain)
        for name, param in self._parameters.items():
            if param is not None and name in self.DIMS:
                kept = self.sliced(name).detach().clone()
                plain.register_parameter(name, nn.Parameter(kept, param.requires_grad))
        for attribute, value in self._kept_widths().items():
            setattr(plain, attribute, value)
        plain.train(self.training)
        return plain


class SwappedNorm(SwappedModule):
    """A norm over the hidden size: its weight (and bias) are the ``hidden_size`` slot."""

    SLOT = "hidden_size"
    SLOTS = {"hidden_size": (SlotDim("weight", 0),)}
    DIMS = {"weight": 0, "bias": 0}
    SIZE_ATTRIBUTES = ("hidden_size", "dim", "normalized_shape")


#: The stand-in for a parameter-free norm's channels (a plain tensor of zeros, not a
#: parameter or buffer: nothing counts, saves or moves it; sorting permutes zeros).
CHANNELS = "_nasframe_channels"


def stated_width(module: nn.Module) -> int | None:
    """The width a module states in ``normalized_shape`` (an int or a 1-tuple), or None."""
    shape = getattr(module, "normalized_shape", None)
    if isinstance(shape, int):
        return shape
    if isinstance(shape, tuple | list) and len(shape) == 1 and isinstance(shape[0], int):
        return shape[0]
    return None


class SwappedFreeNorm(SwappedNorm):
    """A norm over the hidden size without parameters (OLMo's LayerNorm): only its stated
    width follows the slot; a tensor of zeros gives the slot its size."""

    SLOTS = {"hidden_size": (SlotDim(CHANNELS, 0),)}
    DIMS: ClassVar[dict[str, int]] = {}

    @classmethod
    def convert(cls, module: nn.Module) -> SwappedFreeNorm:
        new = super().convert(module)
        width = stated_width(module)
        if width is None:
            raise TypeError(f"{type(module).__name__} states no normalized_shape to slice")
        new.__dict__[CHANNELS] = torch.zeros(width)
        new.declare_slots(cls.SLOTS)
        return new


class SwappedEmbedding(SwappedModule):
    """An ``nn.Embedding`` subclass (scaled, learned positions): the width is a slot."""

    SLOT = "embedding_dim"
    SLOTS = {"embedding_dim": (SlotDim("weight", 1),)}
    DIMS = {"weight": 1}
    SIZE_ATTRIBUTES = ("embedding_dim",)


@functools.cache
def swapped_class(mixin: type[SwappedModule], plain_class: type[nn.Module]) -> type:
    """The dynamic subclass of ``plain_class`` that runs its forward on sliced weights."""
    return type(
        f"Dynamic{plain_class.__name__}",
        (mixin, plain_class),
        {"PLAIN_CLASS": plain_class, "__module__": mixin.__module__},
    )


def has_only_sliceable_state(module: nn.Module, size: int) -> bool:
    """Whether every parameter of ``module`` is a vector of ``size`` (a norm's weight/bias)."""
    params = [p for p in module._parameters.values() if p is not None]
    return bool(params) and all(p.dim() == 1 and p.shape[0] == size for p in params)
