"""The pluggy hook specifications: everything a plugin can contribute to nasframe.

Plugins are plain modules with functions marked ``@hookimpl`` and are found through the
``nasframe`` entry-point group, exactly like a third party's plugin. Most hooks return a
mapping; the host merges the mappings of every plugin (a later plugin may not silently
override an earlier one: a clash is an error naming both). The ``firstresult`` hooks ask each
plugin in turn and take the first answer that is not None.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from torch import nn

hookspec = pluggy.HookspecMarker("nasframe")
hookimpl = pluggy.HookimplMarker("nasframe")


@hookspec
def nasframe_dynamic_modules() -> dict[type[nn.Module], type]:
    """Map plain module types to the ``DynamicModule`` subclasses that replace them."""


@hookspec
def nasframe_passthrough_modules() -> list[type[nn.Module]]:
    """Module types that act on each feature independently (activations, dropout).

    Their output's last dimension is their input's, so tie discovery looks through them.
    """


@hookspec
def nasframe_algorithms() -> dict[str, type]:
    """Map algorithm names (``--algo NAME``) to ``BaseSearcher`` subclasses."""


@hookspec
def nasframe_gradient_setups() -> dict[type, Callable[[Any], tuple[Any, Any]]]:
    """``SETUP_GRADIENT_FUNC`` entries: ``DynamicModule`` type -> ``setup(module)``.

    ``setup`` returns ``(GradientDataManager, RemovableHandle)``; the gradnas plugin
    collects these so that any plugin can make its module type scorable by gradnas.
    """


@hookspec(firstresult=True)
def nasframe_describe_ties(model: nn.Module) -> Any:
    """Describe ``model``'s tied dimensions without tracing it: a ``TieAnalysis``
    (:mod:`nasframe.space.ties`).

    For model families torch.fx cannot trace (Hugging Face transformers). Return None for a
    model the plugin does not recognise; the first non-None answer wins, and without one
    ``convert`` traces the model.
    """


@hookspec
def nasframe_architectures() -> dict[str, Callable[..., nn.Module]]:
    """Map architecture names to builders ``build(**json_kwargs) -> untrained nn.Module``.

    ``nasframe.load`` rebuilds a saved model's unpruned architecture from the name and JSON
    keyword arguments in its ``nasframe.json`` (model names of ``nasframe_models`` work too).
    """


@hookspec
def nasframe_finalize_export(model: nn.Module) -> None:
    """Called with every freshly exported (plain) model, to update what the module swap
    cannot express: a config object's sizes, layer indices after layers were removed.
    Return nothing; leave models of families the plugin does not know untouched."""
