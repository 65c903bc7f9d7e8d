"""Registers the transformers support with nasframe.

transformers itself is imported lazily: a family only looks at a model once a caller passes
one, and such a model means transformers is already imported.
"""

from __future__ import annotations

from typing import Any

from nasframe.hookspecs import hookimpl
from nasframe.space.family import ModelFamily
from nasframe_transformers.export import build_from_config
from nasframe_transformers.families.registry import FAMILIES


@hookimpl
def nasframe_model_families() -> list[ModelFamily]:
    return list(FAMILIES)


@hookimpl
def nasframe_architectures() -> dict[str, Any]:
    return {"transformers": build_from_config}


@hookimpl
def nasframe_gradient_setups() -> dict[type, Any]:
    """gradnas's hook (``gradnas.hookspecs``): each family's setups, without importing gradnas."""
    setups: dict[type, Any] = {}
    for family in FAMILIES:
        setups.update(family.gradient_setups())
    return setups
