"""The pluggy hook specifications of the library: what a plugin can contribute to nasframe.

Plugins are plain modules with functions marked ``@hookimpl`` and are found through the
``nasframe`` entry-point group, exactly like a third party's plugin. Most hooks return a
mapping; the host merges the mappings of every plugin (a later plugin may not silently
override an earlier one: a clash is an error naming both). The list-returning hooks are
concatenated, built-ins first. Hooks that belong to whoever calls them live there (the app's
models in :mod:`nasframe.app.hookspecs`, gradnas's gradient setups in ``gradnas.hookspecs``)
and are added to the one plugin manager by their caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from torch import nn

    from nasframe.space.family import ModelFamily

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
def nasframe_model_families() -> list[ModelFamily]:
    """Model families described rather than traced (Hugging Face transformers): objects
    satisfying :class:`nasframe.space.family.ModelFamily`.

    ``convert`` lets the first family whose ``matches`` accepts a model describe its ties
    (without one it traces the model) and ``export`` lets it finalize the exported model.
    A family must leave models it does not match alone.
    """


@hookspec
def nasframe_architectures() -> dict[str, Callable[..., nn.Module]]:
    """Map architecture names to builders ``build(**json_kwargs) -> untrained nn.Module``.

    ``nasframe.load`` rebuilds a saved model's unpruned architecture from the name and JSON
    keyword arguments in its ``nasframe.json`` (model names of ``nasframe_models`` work too).
    """
