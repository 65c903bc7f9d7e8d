"""What the transformers plugin asks of a family beyond what the library does.

:class:`nasframe.space.family.ModelFamily` is what ``convert`` and ``export`` need
(``matches``, ``describe``, ``prepare``, ``finalize_export``). Saving a plain transformers
directory also needs the config fields an exported model's sizes set and the bias flags a
plain model needs; gradnas needs the setups of the family's dynamic module types.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import nn

from nasframe.space.family import ModelFamily


@runtime_checkable
class TransformersFamily(ModelFamily, Protocol):
    """A transformers model family: the library's interface plus config knowledge."""

    def config_sizes(self, model: nn.Module) -> tuple[dict[str, Any], list[str]]:
        """The config fields an exported model's sizes set, and why no plain config can
        describe it (phrases such as "intermediate_size differs between layers"; empty when
        a plain config can)."""
        ...

    def bias_flags(self, model: nn.Module) -> tuple[dict[str, bool], list[nn.Linear]]:
        """The config flags under which a plain model has every bias the exported ``model``
        has (reconstruction may add some), and the projections to save with zero biases.
        ``({}, [])`` for a family whose projections always have biases; raises
        ``UserInputError`` when no flags can give a bias."""
        ...

    def gradient_setups(self) -> dict[type, Any]:
        """gradnas setups (``SETUP_GRADIENT_FUNC`` entries) for the family's module types."""
        ...


def write_config_sizes(family: TransformersFamily, model: nn.Module) -> None:
    """Write the sizes of the exported ``model`` into its config: the one place every
    family's ``finalize_export`` ends. Sizes that differ between layers are not written (the
    config keeps the unpruned value, from which ``nasframe.load`` selects the saved config)."""
    sizes, _ = family.config_sizes(model)
    for key, value in sizes.items():
        setattr(model.config, key, value)
