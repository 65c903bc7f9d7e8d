"""Dynamic subclasses of a family's own modules, which run the family's own forward.

Attention code differs between families (sliding windows, biases, GQA kernels, upcasting) and
between transformers releases. Rather than re-implementing it, the dynamic class subclasses the
family's class (one subclass per class, made once), copies the original's plain attributes,
adopts its projections as views that share their parameters, and for each forward hands every
projection its weights sliced to the kept units. Counts the family's forward reads (heads, KV
groups) are properties that follow the kept units. The export builds an instance of the
family's class again, with plain projections of the kept sizes.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch
from torch import nn

from nasframe.space.dynamic import DynamicModule


def copy_plain_attributes(source: nn.Module, target: nn.Module, skip: frozenset[str]) -> None:
    """``source``'s plain attributes (config, head size, scaling, layer index) on ``target``;
    parameters, buffers and children live elsewhere, and ``skip`` names computed ones."""
    for key, value in vars(source).items():
        if not key.startswith("_") and key not in skip and key != "training":
            setattr(target, key, value)


def plain_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """A plain ``nn.Linear`` holding copies of ``weight`` and ``bias``."""
    plain = nn.Linear(
        weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device
    ).to(weight.dtype)
    with torch.no_grad():
        plain.weight.copy_(weight)
        if bias is not None:
            plain.bias.copy_(bias)
    return plain


class WrappedModule(DynamicModule):
    """Mixin: a dynamic module that runs its family class's forward with sliced projections.

    Subclasses set ``PROJECTIONS`` (child names), ``DERIVED`` (attributes they compute as
    properties, never copied), and implement ``adopt_projection`` (a view of a child that
    runs with ``override`` weights when set), ``plain_projection`` (the export's child) and
    ``plain_attributes`` (the computed values the exported module stores).
    """

    PLAIN_CLASS: ClassVar[type[nn.Module]]
    PROJECTIONS: ClassVar[tuple[str, ...]] = ()
    DERIVED: ClassVar[frozenset[str]] = frozenset()

    @staticmethod
    def adopt_projection(child: nn.Module) -> nn.Module:
        raise NotImplementedError

    @staticmethod
    def plain_projection(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
        raise NotImplementedError

    def plain_attributes(self) -> dict[str, Any]:
        return {}

    def projection_weights(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The kept (weight, bias) of projection ``name``, for its forward and the export."""
        return self.sliced(f"{name}.weight"), self.sliced(f"{name}.bias")

    @classmethod
    def adopt(cls, module: nn.Module) -> WrappedModule:
        """A new instance with ``module``'s attributes and children (projections as views
        sharing their parameters); the caller declares the slots."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        copy_plain_attributes(module, new, cls.DERIVED)
        for name, child in module.named_children():
            setattr(new, name, cls.adopt_projection(child) if name in cls.PROJECTIONS else child)
        new.train(module.training)
        return new

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        for name in self.PROJECTIONS:
            projection = getattr(self, name)
            projection.override = self.projection_weights(name)
        try:
            return super().forward(*args, **kwargs)
        finally:
            for name in self.PROJECTIONS:
                getattr(self, name).override = None

    def export(self) -> nn.Module:
        plain = self.PLAIN_CLASS.__new__(self.PLAIN_CLASS)
        nn.Module.__init__(plain)
        copy_plain_attributes(self, plain, self.DERIVED)
        for name, child in self.named_children():
            if name in self.PROJECTIONS:
                child = self.plain_projection(*self.projection_weights(name))
            setattr(plain, name, child)
        for key, value in self.plain_attributes().items():
            setattr(plain, key, value)
        plain.train(self.training)
        return plain


@functools.cache
def dynamic_subclass(mixin: type[DynamicModule], plain_class: type[nn.Module]) -> type:
    """The dynamic subclass of ``plain_class`` with ``mixin`` first in its MRO (made once)."""
    return type(
        f"Dynamic{plain_class.__name__}",
        (mixin, plain_class),
        {"PLAIN_CLASS": plain_class, "__module__": mixin.__module__},
    )
