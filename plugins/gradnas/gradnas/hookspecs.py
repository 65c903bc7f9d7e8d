"""gradnas's hook specification: the gradient setups any plugin can contribute.

The hook belongs to gradnas, which calls it; :func:`gradnas.registry.gradnas_plugin_manager`
adds it to nasframe's one plugin manager the first time gradnas reads its setups (as pytest
plugins add theirs). Implementations use nasframe's ``hookimpl`` marker (same project name).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("nasframe")


@hookspec
def nasframe_gradient_setups() -> dict[type, Callable[[Any], tuple[Any, Any]]]:
    """``SETUP_GRADIENT_FUNC`` entries: ``DynamicModule`` type -> ``setup(module)``.

    ``setup`` returns ``(GradientDataManager, RemovableHandle)``; gradnas collects these so
    that any plugin can make its module type scorable by gradnas.
    """
