"""The public calls: a model to a search space, a searched sub-network, a plain model, a file.

These are the only functions that look the plugins up (once per call, from the one plugin
manager) and pass what they found down: :mod:`nasframe.space.convert`,
:mod:`nasframe.space.export` and :mod:`nasframe.io.serialization` take their registries as
arguments, so they work without any plugin manager.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torch import nn

import nasframe.io.serialization as serialization
import nasframe.space.convert as space_convert
import nasframe.space.export as space_export
from nasframe.cost.budget import Constraint
from nasframe.plugins import convert_registry, get_algorithm, model_families, registry
from nasframe.searchers.base import SearchResult
from nasframe.space.convert import Rules
from nasframe.space.family import finalizer
from nasframe.space.search_space import SearchSpace


def search(
    model: nn.Module | SearchSpace,
    constraints: Mapping[str, Any] | str | Constraint,
    dummy_input: Any = None,
    algorithm: str = "gradnas",
    config: Mapping[str, Any] | None = None,
    rules: Rules | None = None,
) -> tuple[SearchSpace, SearchResult]:
    """Convert ``model`` (unless it is a space already), search it and select the result.

    Args:
        model: A plain model (converted in place with :func:`convert` and ``rules``) or a
            :class:`SearchSpace` to search as it is.
        constraints: Exactly one budget: ``{"params": "75%"}``, ``"flops=60%"``,
            ``"params=5M"`` or a :class:`Constraint`.
        dummy_input: An input the cost model runs the model on (needed for FLOPs).
        algorithm: Any name registered by a plugin (``nasframe algos`` lists them).
        config: That algorithm's search config (see its ``default_search_config``).
        rules: The choices of each hparam when ``model`` still has to be converted.

    Returns:
        The search space, with the found config selected, and the searcher's result.
    """
    space = model if isinstance(model, SearchSpace) else convert(model, rules)
    searcher = get_algorithm(algorithm)()
    result = searcher.search(space, constraints, dummy_input=dummy_input, config=config)
    return space, result


def convert(model: nn.Module, rules: Rules | None = None) -> SearchSpace:
    """Turn ``model`` (in place) into a :class:`SearchSpace`, with the installed plugins'
    dynamic modules and model families.

    Args:
        model: The model to search; its modules are swapped for dynamic versions sharing
            the same parameters (no weight is copied).
        rules: Glob patterns over hparam names mapped to a :class:`~nasframe.ChoiceRule` or
            its fields as a dict, e.g. ``{"*.fc1.out_features": {"divisor": 32}}``; the first
            matching pattern wins.

    Returns:
        The search space over ``model``, at full size.
    """
    return space_convert.convert(model, rules, registry=convert_registry())


def export(space: SearchSpace, inplace: bool = False) -> nn.Module:
    """A plain PyTorch model of the space's active config, finalized by its model family.

    Args:
        space: The search space whose selected config is materialised.
        inplace: Reuse the space's own model (cheaper, but the space is spent); otherwise a
            copy is exported and the space is untouched.

    Returns:
        A model without any nasframe module, whose family (if any) updated its config.
    """
    return space_export.export(space, inplace, finalize=finalizer(model_families()))


def load(directory: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """Restore a pruned model written by :func:`nasframe.save`, never unpickling anything.

    Args:
        directory: A directory :func:`nasframe.save` wrote.
        model: An unpruned instance of the architecture; omit it when the model was saved
            under a registered architecture name, which then rebuilds it in eval mode.

    Returns:
        The pruned model with the saved weights.

    Raises:
        UserInputError: The directory is not a complete nasframe save, or its weights do not
            fit the architecture.
    """
    return serialization.load(
        directory,
        model,
        registry=convert_registry(),
        finalize=finalizer(model_families()),
        architectures=registry("nasframe_architectures"),
    )


def build_architecture(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """An untrained model of the installed architecture ``name`` (how :func:`load` rebuilds
    a saved model's unpruned architecture)."""
    return serialization.build_architecture(name, kwargs, registry("nasframe_architectures"))
