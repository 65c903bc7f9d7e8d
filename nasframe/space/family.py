"""What the library asks of a model family it cannot trace (``ModelFamily``).

torch.fx cannot trace some models (transformers 5's), so a plugin describes their search
space directly: one object per family, registered with the ``nasframe_model_families`` hook.
``convert`` asks the first family that ``matches`` a model to ``describe`` it and, once the
modules are swapped, to ``prepare`` it; ``export`` lets the exported model's family
``finalize_export`` it. A family's other knowledge (a transformers config's fields, say) is
the plugin's own business and extends this Protocol there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from torch import nn

from nasframe.space.ties import TieAnalysis


@runtime_checkable
class ModelFamily(Protocol):
    """A family of models whose tied dimensions are described rather than traced."""

    #: A short name for messages and listings (``"llama"``).
    name: str

    def matches(self, model: nn.Module) -> bool:
        """Whether ``model`` (plain, converted or exported) is one of this family's."""
        ...

    def describe(self, model: nn.Module) -> TieAnalysis:
        """The tied slots of a model ``matches`` accepted. Must not change the model:
        whatever the converted model needs goes into :meth:`prepare`."""
        ...

    def prepare(self, model: nn.Module) -> None:
        """Called by ``convert`` once the modules are swapped: give the converted model what
        its forward needs while it is searched (forward hooks, say)."""
        ...

    def finalize_export(self, model: nn.Module) -> None:
        """Update a freshly exported (plain) model where swapping modules cannot: a config's
        sizes, layer indices after layers were removed, whatever :meth:`prepare` installed."""
        ...


def family_of(model: nn.Module, families: Iterable[ModelFamily]) -> ModelFamily | None:
    """The first of ``families`` that claims ``model``, or None (``convert`` then traces)."""
    return next((family for family in families if family.matches(model)), None)


def finalizer(families: Iterable[ModelFamily]) -> Callable[[nn.Module], None]:
    """``export``'s ``finalize`` for these families: the exported model's family (if any)
    finalizes it; a model no family claims is left as it is."""
    known = tuple(families)

    def finalize(model: nn.Module) -> None:
        family = family_of(model, known)
        if family is not None:
            family.finalize_export(model)

    return finalize


def leave_as_is(model: nn.Module) -> None:
    """``export``'s ``finalize`` where no family is installed: nothing to update."""
