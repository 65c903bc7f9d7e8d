"""The app's hook specifications: the models ``--model`` can name or resolve.

They belong to the app, which calls them, and are added to the one plugin manager by
:func:`nasframe.app.model_registry.app_plugin_manager` (as pytest plugins add theirs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from nasframe.app.model_registry import ModelEntry

hookspec = pluggy.HookspecMarker("nasframe")
hookimpl = pluggy.HookimplMarker("nasframe")


@hookspec
def nasframe_models() -> dict[str, Any]:
    """Map model names (``--model NAME``) to ``nasframe.app.model_registry.ModelEntry`` objects."""


@hookspec(firstresult=True)
def nasframe_resolve_model(spec: str) -> ModelEntry | None:
    """A model given by path or any other spec a plugin understands: a ``ModelEntry``.

    ``--model`` accepts more than registered names (a model directory, a weights file), and
    only the plugin of that format can tell whether a spec is one of its own. Return None for a
    spec the plugin does not recognise; the first non-None answer wins. Called only for specs
    that are not registered names. Do not import heavy libraries here: loading happens in the
    entry's ``load``.
    """
