"""``SETUP_GRADIENT_FUNC``: module type -> how to attach a gradient mask to it.

The entries come from every plugin's ``nasframe_gradient_setups`` hook (gradnas's own spec,
:mod:`gradnas.hookspecs`), read on every use and never at import (importing gradnas builds no
plugin manager). Nothing is cached here, so ``nasframe.plugins.reset_plugin_manager()`` is
the one reset a newly installed plugin needs. Code may also add an entry directly,
``GradientBinarySearcher.SETUP_GRADIENT_FUNC[MyDynamicModule] = setup``, without a plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import pluggy

import gradnas.hookspecs as hookspecs
from nasframe.plugins import get_plugin_manager, merge_registrations
from nasframe.space.dynamic import DynamicModule

SetupFunc = Callable[[DynamicModule], Any]
HOOK = "nasframe_gradient_setups"


def gradnas_plugin_manager() -> pluggy.PluginManager:
    """The one plugin manager, with gradnas's hook specification added (once per manager)."""
    manager = get_plugin_manager()
    caller = getattr(manager.hook, HOOK, None)
    if caller is None or caller.spec is None:
        manager.add_hookspecs(hookspecs)
    return manager


class GradientSetupRegistry(MutableMapping):
    """A dict of setup functions: the plugins' (read from the current plugin manager on
    every use, so nothing here needs resetting) plus the ones added directly, which win."""

    def __init__(self) -> None:
        self._added: dict[type, SetupFunc] = {}

    def _loaded(self) -> dict[type, SetupFunc]:
        hook = getattr(gradnas_plugin_manager().hook, HOOK)
        # pluggy calls the last registered plugin first; reverse so built-ins come first.
        return {**merge_registrations(HOOK, reversed(hook())), **self._added}

    def reload(self) -> None:
        """Nothing to do: the plugins are read on every use. Kept for callers of the old
        API; ``nasframe.plugins.reset_plugin_manager()`` is the one reset there is."""

    def __getitem__(self, key: type) -> SetupFunc:
        return self._loaded()[key]

    def __setitem__(self, key: type, value: SetupFunc) -> None:
        self._added[key] = value

    def __delitem__(self, key: type) -> None:
        del self._added[key]

    def __iter__(self) -> Iterator[type]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())

    def for_module(self, module: DynamicModule) -> SetupFunc | None:
        """The setup of the most specific registered type of ``module``."""
        entries = self._loaded()
        for cls in type(module).__mro__:
            if cls in entries:
                return entries[cls]
        return None
