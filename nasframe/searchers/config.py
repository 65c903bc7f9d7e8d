"""Typed search configs: what a search may be told, validated once, when it is built.

A search config reaches a searcher as a plain mapping (``nasframe.search(..., config={...})``,
the seed's form); each searcher declares the frozen dataclass that mapping becomes
(``config_type``). Building it is the one place a config is checked: an unknown key, or a
bad value of any field, is one :class:`~nasframe.errors.UserInputError` naming the key and the
fix. Searcher code then reads attributes, and the application asks the type which options an
algorithm accepts (:meth:`SearchConfig.supports`) instead of probing dict keys.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from nasframe.errors import UserInputError
from nasframe.searchers.allocator import check_allocation_settings

ScoreFunc = Callable[[nn.Module], float]
ConfigT = TypeVar("ConfigT", bound="SearchConfig")


@dataclass(frozen=True)
class SearchConfig:
    """What every search accepts: where to checkpoint, and whether to show progress bars."""

    #: File the search checkpoints to and resumes from; None: no checkpoint.
    checkpoint: str | os.PathLike[str] | None = None
    verbose: bool = True

    def __post_init__(self) -> None:
        if self.checkpoint is not None and not isinstance(self.checkpoint, str | os.PathLike):
            raise UserInputError(
                f"checkpoint must be a file path (or None for no checkpoint), got "
                f"{self.checkpoint!r}."
            )
        _check_bool("verbose", self.verbose)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Every key a config of this type may have, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def supports(cls, key: str) -> bool:
        """Whether a search with this config type accepts ``key`` (e.g. ``"uniform"``)."""
        return key in cls.field_names()

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every key with its default: the seed's ``default_search_config``. Built from the
        field defaults, not an instance, since a required field (None here) is invalid."""
        return {f.name: f.default for f in dataclasses.fields(cls)}

    @classmethod
    def from_mapping(
        cls: type[ConfigT], config: Mapping[str, Any] | None, algorithm: str
    ) -> ConfigT:
        """The typed config of ``config`` (missing keys take their defaults); an unknown key
        is an error that names ``algorithm`` and lists the valid keys."""
        config = dict(config or {})
        unknown = sorted(set(config) - set(cls.field_names()))
        if unknown:
            raise UserInputError(
                f"unknown search config key(s) {', '.join(unknown)} for {algorithm}; valid keys: "
                f"{', '.join(sorted(cls.field_names()))}."
            )
        return cls(**config)

    def as_dict(self) -> dict[str, Any]:
        """The seed's dict form. Shallow on purpose (unlike ``dataclasses.asdict``): a data
        loader or a loss function is handed on, never copied."""
        return {name: getattr(self, name) for name in self.field_names()}


@dataclass(frozen=True)
class BinarySearchConfig(SearchConfig):
    """What the shared binary search (fastnas, gradnas) accepts on top of the base settings."""

    #: model -> float, higher is better; evaluated once per allowed size (fastnas).
    score_func: ScoreFunc | None = None
    #: One size per group of per-layer hparams (every layer's FFN width alike), so the
    #: result is expressible as a plain config of the model's family.
    uniform: bool = False
    #: How sensitivities become sizes: see nasframe.searchers.allocator.ALLOCATIONS.
    allocation: str = "threshold"
    #: How each hparam's sensitivities are scaled first: see nasframe.searchers.normalization.
    normalize: str = "none"
    #: Fraction of each hparam's full size an allocation never goes below (0: down to its
    #: smallest allowed size).
    min_keep: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.score_func is not None and not callable(self.score_func):
            raise UserInputError(
                f"score_func must be callable as score_func(model) -> float (higher is better), "
                f"got {self.score_func!r}."
            )
        _check_bool("uniform", self.uniform)
        check_allocation_settings(self.allocation, self.normalize, self.min_keep)


def _check_bool(key: str, value: Any) -> None:
    """A flag must be True or False: ``"false"`` or 0 would silently mean something else."""
    if not isinstance(value, bool):
        raise UserInputError(f"{key} must be True or False, got {value!r}.")
