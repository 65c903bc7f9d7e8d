"""The model families the transformers plugin supports, each a module with one interface.

A family module provides:

- ``is_family(model) -> bool``: whether ``model`` (converted or exported) is one of its models;
- ``describe_ties(model) -> TieAnalysis | None``: its search space, without tracing;
- ``finalize_export(model) -> None``: renumber layers, write sizes into the config;
- ``config_sizes(model) -> (sizes, problems)``: the config fields an exported model's sizes
  set, and why no plain config can describe it (phrases such as "intermediate_size differs
  between layers"; empty when a plain config can);
- ``GRADIENT_SETUPS``: gradnas setups for its dynamic module types;
- optionally ``bias_flags(model) -> (flags, zero_bias_modules)``: the config flags under which
  a plain model has every bias an exported model has (reconstruction may add some), and the
  projections to save with zero biases; raises ``UserInputError`` when none can. A family
  whose projections always have biases (GPT-2, BERT) needs none.

Families are imported on first use, so importing nasframe never imports transformers.
"""

from __future__ import annotations

import importlib
from functools import cache
from types import ModuleType

from torch import nn

FAMILY_MODULES: tuple[str, ...] = (
    "nasframe_transformers.llama",
    "nasframe_transformers.gpt2",
    "nasframe_transformers.bert",
)


@cache
def families() -> tuple[ModuleType, ...]:
    return tuple(importlib.import_module(name) for name in FAMILY_MODULES)


def family_of(model: nn.Module) -> ModuleType | None:
    """The family module of ``model``, or None for a model no family supports."""
    if not type(model).__module__.startswith("transformers."):
        return None
    return next((family for family in families() if family.is_family(model)), None)
