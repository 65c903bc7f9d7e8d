"""Registers the transformers support with nasframe.

transformers itself is imported lazily: the hooks only look at a model once a caller passes
one, and such a model means transformers is already imported.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from nasframe.hookspecs import hookimpl
from nasframe_transformers.export import build_from_config
from nasframe_transformers.families import families, family_of


@hookimpl
def nasframe_describe_ties(model: nn.Module) -> Any:
    family = family_of(model)
    return family.describe_ties(model) if family is not None else None


@hookimpl
def nasframe_architectures() -> dict[str, Any]:
    return {"transformers": build_from_config}


@hookimpl
def nasframe_gradient_setups() -> dict[type, Any]:
    setups: dict[type, Any] = {}
    for family in families():
        setups.update(family.GRADIENT_SETUPS)
    return setups


@hookimpl
def nasframe_finalize_export(model: nn.Module) -> None:
    family = family_of(model)
    if family is not None:
        family.finalize_export(model)
