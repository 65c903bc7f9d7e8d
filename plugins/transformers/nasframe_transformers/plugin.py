"""Registers the transformers support with nasframe (transformers is imported lazily)."""

from __future__ import annotations

from typing import Any

from torch import nn

from nasframe.hookspecs import hookimpl
from nasframe_transformers.export import build_from_config
from nasframe_transformers.llama import describe_llama_ties


@hookimpl
def nasframe_describe_ties(model: nn.Module) -> Any:
    return describe_llama_ties(model)


@hookimpl
def nasframe_architectures() -> dict[str, Any]:
    return {"transformers": build_from_config}
