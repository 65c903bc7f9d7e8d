"""What the CLI needs to know about a model: how to build it, load it and tokenize for it.

Plugins register :class:`ModelEntry` objects by name through the ``nasframe_models`` hook
(``--model NAME``). ``architecture`` rebuilds the unpruned model from JSON-able keyword
arguments, which is how a pruned model is loaded again without unpickling anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from nasframe.errors import UserInputError


@dataclass
class ModelBundle:
    """A ready model with its tokenizer and the recipe that rebuilds its architecture."""

    model: nn.Module
    encode: Callable[[str], list[int]]
    name: str
    architecture: dict[str, Any] = field(default_factory=dict)  # {"name": ..., "kwargs": {...}}


@dataclass(frozen=True)
class ModelEntry:
    """A named model a plugin offers.

    ``load(progress=True)`` returns a :class:`ModelBundle` with trained weights (showing
    progress bars only when ``progress``); ``architecture(**kwargs)`` builds an untrained model
    of the same shape from the bundle's JSON-able ``architecture["kwargs"]``.
    """

    description: str
    load: Callable[..., ModelBundle]
    architecture: Callable[..., nn.Module]


def model_entries() -> dict[str, ModelEntry]:
    from nasframe.plugins import registry

    return registry("nasframe_models")


def get_model_entry(name: str) -> ModelEntry:
    entries = model_entries()
    if name not in entries:
        raise UserInputError(
            f"unknown model {name!r}; choose one of: {', '.join(sorted(entries)) or 'none'}."
        )
    return entries[name]
