"""One call from a model to a searched sub-network."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from nasframe.cost.budget import Constraint
from nasframe.plugins import get_algorithm
from nasframe.searchers.base import SearchResult
from nasframe.space.convert import Rules, convert
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

    ``algorithm`` is any name registered by a plugin (``nasframe algos`` lists them);
    ``config`` is that algorithm's search config (see its ``default_search_config``).
    """
    space = model if isinstance(model, SearchSpace) else convert(model, rules)
    searcher = get_algorithm(algorithm)()
    result = searcher.search(space, constraints, dummy_input=dummy_input, config=config)
    return space, result
