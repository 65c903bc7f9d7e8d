"""The skeleton every search shares, and what a search returns.

:class:`BaseSearcher` owns what any search needs: the search config (its type,
:attr:`BaseSearcher.config_type`, defines the keys, defaults and checks; see
:mod:`nasframe.searchers.config`), the one constraint and its cost model, and the
checkpoint. The seed's loop that fastnas and gradnas share is
:class:`nasframe.searchers.binary.BinarySearcher`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from tqdm.auto import tqdm

from nasframe.cost.budget import Constraint
from nasframe.cost.cost_model import CostModel
from nasframe.errors import UserInputError
from nasframe.searchers.checkpoint import SearchCheckpoint, weights_digest
from nasframe.searchers.config import ScoreFunc, SearchConfig
from nasframe.space.search_space import Config, SearchSpace

__all__ = ["BaseSearcher", "ScoreFunc", "SearchResult"]


@dataclass
class SearchResult:
    """What a search found, and what it cost to find it."""

    config: Config
    constraint: str
    limit: float
    cost_before: float
    cost_after: float
    importance: dict[str, torch.Tensor]
    sensitivity: dict[str, dict[int, float]]
    timings: dict[str, float] = field(default_factory=dict)
    resumed: bool = False
    #: Seconds spent computing importance and sensitivities, including the runs that wrote
    #: a resumed checkpoint (``timings`` only covers this run).
    compute_s: float = 0.0


class BaseSearcher(ABC):
    """Skeleton of a search: config handling, constraint, checkpoint; subclasses search."""

    name: ClassVar[str] = "base"
    #: The frozen dataclass a search config becomes: its fields are the keys a config may
    #: have, and building it validates them. A subclass with keys of its own declares a
    #: subclass of its parent's config type.
    config_type: ClassVar[type[SearchConfig]] = SearchConfig

    def __init__(self) -> None:
        self.space: SearchSpace | None = None
        #: The typed config of the current search (None before the first ``configure``).
        self.settings: SearchConfig | None = None
        self.cost_model: CostModel | None = None
        self.timings: dict[str, float] = {}
        #: What identifies the data the scores come from (e.g. a digest of the calibration
        #: set), set by a caller that knows it (the CLI job does): part of the checkpoint's
        #: fingerprint, so a checkpoint of other data is refused. None: not known.
        self.data_identity: str | None = None

    @property
    def config(self) -> dict[str, Any]:
        """The current search config in the seed's dict form (read-only: ``configure``)."""
        return self.settings.as_dict() if self.settings is not None else {}

    @property
    def default_search_config(self) -> dict[str, Any]:
        """Every key a search config may have, with its default."""
        return self.config_type.defaults()

    def sanitize_search_config(self, config: Mapping[str, Any] | None) -> dict[str, Any]:
        """Defaults filled in; an unknown key is an error that lists the valid keys, and a bad
        value is an error that names its key."""
        return self.config_type.from_mapping(config, self.name).as_dict()

    def configure(self, config: Mapping[str, Any] | None) -> SearchConfig:
        """Validate ``config`` and hold it as :attr:`settings` for the search to read."""
        self.settings = self.config_type.from_mapping(config, self.name)
        return self.settings

    def search(
        self,
        space: SearchSpace,
        constraints: Mapping[str, Any] | str | Constraint,
        dummy_input: Any = None,
        config: Mapping[str, Any] | None = None,
    ) -> SearchResult:
        """Find the config that meets ``constraints`` with the least degradation and select it."""
        self.space = space
        self.configure(config)
        self.timings = {}
        constraint = Constraint.from_mapping(constraints)
        self.cost_model = CostModel(space, dummy_input)
        if not space.hparams:
            raise UserInputError(
                "the model has nothing searchable (no prunable dimension was found); check that "
                "it is built of supported modules or install a plugin for its module types."
            )
        space.select(space.max_config())
        self.restrict_space()
        limit = self.cost_model.resolve(constraint)
        cost_before = self.cost_model.cost(constraint.kind, space.max_config())
        # The weights digest costs a pass over every weight: only a checkpoint needs it.
        fingerprint = self.fingerprint() if self.settings.checkpoint else {}
        checkpoint = SearchCheckpoint(self.settings.checkpoint, fingerprint)
        found = self.run_search(checkpoint, constraint.kind, limit)
        space.select(found.config)
        found.constraint, found.limit, found.cost_before = str(constraint), limit, cost_before
        found.cost_after = self.cost_model.cost(constraint.kind, found.config)
        found.timings = dict(self.timings)
        return found

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed: algorithm, search space, weights, and
        the data's identity when the caller set :attr:`data_identity`."""
        fingerprint = {
            "algorithm": self.name,
            "hparams": {name: hp.choices for name, hp in self.space.hparams.items()},
            "weights": weights_digest(self.space.model),
        }
        if self.data_identity is not None:
            fingerprint["data"] = self.data_identity
        return fingerprint

    def restrict_space(self) -> None:
        """Narrow the space before the constraint is resolved (nothing here; the binary
        search restricts it to uniform configs when asked)."""
        return None

    @abstractmethod
    def run_search(self, checkpoint: SearchCheckpoint, kind: str, limit: float) -> SearchResult:
        """Search and return the result (constraint fields are filled in by ``search``)."""

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase of the search into ``self.timings``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def progress(self, iterable: Any = None, **kwargs: Any) -> tqdm:
        """A progress bar, hidden when the config says ``verbose=False``."""
        verbose = self.settings.verbose if self.settings is not None else True
        return tqdm(iterable, disable=not verbose, leave=False, **kwargs)
