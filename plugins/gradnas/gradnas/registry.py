"""``SETUP_GRADIENT_FUNC``: module type -> how to attach a gradient mask to it.

The entries come from every plugin's ``nasframe_gradient_setups`` hook, read on first use
(so importing gradnas never builds the plugin manager). Code may also add an entry directly,
``GradientBinarySearcher.SETUP_GRADIENT_FUNC[MyDynamicModule] = setup``, without a plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from nasframe.space.dynamic import DynamicModule

SetupFunc = Callable[[DynamicModule], Any]


class GradientSetupRegistry(MutableMapping):
    """A dict of setup functions, filled from the plugins the first time it is read."""

    def __init__(self) -> None:
        self._entries: dict[type, SetupFunc] | None = None
        self._added: dict[type, SetupFunc] = {}

    def _loaded(self) -> dict[type, SetupFunc]:
        if self._entries is None:
            from nasframe.plugins import registry

            self._entries = registry("nasframe_gradient_setups")
        return {**self._entries, **self._added}

    def reload(self) -> None:
        """Read the plugins again (after installing one in a running process)."""
        self._entries = None

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
