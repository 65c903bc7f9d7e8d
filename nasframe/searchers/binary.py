"""The seed's search loop, which fastnas and gradnas share.

Rank units (``compute_importance``, supplied by an algorithm), sort the weights so the kept
units are the top ones, measure each hparam's *sensitivity* (degradation of the score at each
allowed size), then allocate sizes that meet the constraint (:mod:`nasframe.searchers.allocator`,
settings from :class:`nasframe.searchers.config.BinarySearchConfig`): the seed's binary
search of one degradation threshold (``"allocation": "threshold"``) or the cost-aware global
greedy (``"global"``, :mod:`nasframe.searchers.global_allocation`), optionally on normalised
sensitivities. fastnas and gradnas are subclasses that differ only in how they score.
"""

from __future__ import annotations

import math
import time
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from nasframe.errors import UserInputError
from nasframe.searchers.allocator import ALLOCATIONS, Allocator, check_allocation_settings
from nasframe.searchers.base import BaseSearcher, ScoreFunc, SearchResult
from nasframe.searchers.checkpoint import SearchCheckpoint
from nasframe.searchers.config import BinarySearchConfig
from nasframe.space.search_space import Config

# ALLOCATIONS and check_allocation_settings live in nasframe.searchers.allocator; they stay
# importable from here, where callers found them before.
__all__ = ["ALLOCATIONS", "BinarySearcher", "check_allocation_settings"]


class BinarySearcher(BaseSearcher):
    """Importance ranking, per-choice sensitivity, and an allocation (one threshold or the
    cost-aware global greedy)."""

    name = "binary"
    #: Whether sensitivities are measured with the user's score_func (fastnas) or derived
    #: from unit scores (gradnas); tells callers such as the CLI what to pass.
    uses_score_func: ClassVar[bool] = True
    #: Longest time between checkpoint writes while measuring sensitivities (and while an
    #: algorithm saves partial importance, e.g. gradnas's scoring): an interrupted search
    #: loses at most this much work.
    SAVE_INTERVAL_S: ClassVar[float] = 2.0
    config_type: ClassVar[type[BinarySearchConfig]] = BinarySearchConfig
    settings: BinarySearchConfig | None

    def __init__(self) -> None:
        super().__init__()
        # JSON-able facts about how importance was computed (e.g. batches used); kept in the
        # checkpoint so a resumed search reports them too.
        self.importance_info: dict[str, Any] = {}
        # The checkpoint of the running search and its writer, for an algorithm that saves
        # the partial state of a long importance computation (gradnas's scoring).
        self._checkpoint: SearchCheckpoint | None = None
        self._save_checkpoint: Callable[[], None] | None = None

    def hparam_names_for_search(self) -> list[str]:
        """The hparams this algorithm can score; the rest stay at full size."""
        return list(self.space.hparams)

    @abstractmethod
    def compute_importance(self, names: list[str]) -> dict[str, torch.Tensor]:
        """One score per unit of each named hparam (higher = more important).

        A long computation may checkpoint its partial state with
        :meth:`save_partial_importance` and pick it up with :meth:`partial_importance`.
        """

    def partial_importance(self) -> dict[str, Any] | None:
        """The state an interrupted ``compute_importance`` of this same search saved (same
        fingerprint), or None: start afresh."""
        return None if self._checkpoint is None else self._checkpoint.partial_importance

    def save_partial_importance(self, state: dict[str, Any]) -> None:
        """Checkpoint the JSON-able ``state`` of an unfinished ``compute_importance``
        (atomically; only rank 0 writes): a rerun gets it back from
        :meth:`partial_importance`. Without a checkpoint path it does nothing."""
        if self._checkpoint is None or self._save_checkpoint is None:
            return
        self._checkpoint.partial_importance = state
        self._save_checkpoint()

    def fingerprint(self) -> dict[str, Any]:
        """The base fingerprint plus what the algorithm's scores depend on beyond the model
        (:meth:`scoring_fingerprint`), so a checkpoint of other settings is refused."""
        fingerprint = super().fingerprint()
        scoring = self.scoring_fingerprint()
        if scoring:
            fingerprint["scoring"] = scoring
        return fingerprint

    def scoring_fingerprint(self) -> dict[str, Any]:
        """JSON-able settings the importance depends on (none here; gradnas: its batches)."""
        return {}

    @property
    def score_func(self) -> ScoreFunc:
        """Higher is better: accuracy, or minus a loss. Evaluated once per choice."""
        func = self.settings.score_func if self.settings is not None else None
        if func is None:
            raise UserInputError(
                f"{self.name} needs a score_func in the search config (model -> float, higher is "
                "better, e.g. minus the validation loss)."
            )
        return func

    def compute_sensitivity(self, name: str) -> dict[int, float]:
        """Score degradation of each allowed size of ``name``, every other hparam at full size."""
        hparam = self.space.hparams[name]
        model = self.space.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                hparam.active = hparam.max
                full = float(self.score_func(model))
                if not math.isfinite(full):
                    raise UserInputError(
                        f"score_func returned {full} for the full model; it must return a "
                        "finite number (higher is better): check the model and its data."
                    )
                degradation = {hparam.max: 0.0}
                for choice in self.progress(hparam.choices[:-1], desc=f"sensitivity {name}"):
                    hparam.active = choice
                    degradation[choice] = full - float(self.score_func(model))
        finally:
            hparam.active = hparam.max
            model.train(was_training)
        return degradation

    def run_search(self, checkpoint: SearchCheckpoint, kind: str, limit: float) -> SearchResult:
        names = self.hparam_names_for_search()
        if not names:
            raise UserInputError(
                f"{self.name} can score none of this model's hparams; use another algorithm or "
                "install a plugin that makes these module types scorable."
            )
        resumed = checkpoint.resumed
        # Seconds spent on importance and sensitivities, over every run that added to this
        # checkpoint: a resumed search still reports what its results cost to compute.
        spent_before, start = float(checkpoint.extra.get("compute_s", 0.0)), time.perf_counter()

        def save() -> None:
            checkpoint.extra["compute_s"] = spent_before + time.perf_counter() - start
            checkpoint.save()

        # The checkpoint keeps scores in the units' original order: the space may already be
        # sorted (a search interrupted or run before on it), and its units permuted.
        hparams = self.space.all_hparams
        self._checkpoint, self._save_checkpoint = checkpoint, save
        with self.phase("importance"):
            if checkpoint.importance is None:
                checkpoint.importance = {
                    name: _in_original_order(scores, hparams[name].unit_ids)
                    for name, scores in self.compute_importance(names).items()
                }
                checkpoint.partial_importance = None
                checkpoint.extra["importance_info"] = self.importance_info
                save()
            else:
                self.importance_info = dict(checkpoint.extra.get("importance_info", {}))
        for name, scores in checkpoint.importance.items():
            hparams[name].importance = scores[hparams[name].unit_ids]
        self.space.sort_parameters()
        with self.phase("sensitivity"):
            # Rewriting the checkpoint after every hparam costs more than computing a cheap
            # sensitivity (gradnas's): save at most every SAVE_INTERVAL_S, and at the end or
            # when interrupted (Ctrl-C, SIGTERM, an error), so finished work is never lost.
            last_save, unsaved = time.monotonic(), False
            try:
                for name in self.progress(names, desc="hparams"):
                    if name not in checkpoint.sensitivity:
                        checkpoint.sensitivity[name] = self.compute_sensitivity(name)
                        unsaved = True
                        if time.monotonic() - last_save >= self.SAVE_INTERVAL_S:
                            save()
                            last_save, unsaved = time.monotonic(), False
            finally:
                if unsaved:
                    save()
        with self.phase("allocation"):
            sensitivity = {name: checkpoint.sensitivity[name] for name in names}
            config = self.allocate(sensitivity, kind, limit)
        return SearchResult(
            config=self.space.max_config() | config,
            constraint="",
            limit=limit,
            cost_before=0.0,
            cost_after=0.0,
            importance=dict(checkpoint.importance),
            sensitivity=sensitivity,
            resumed=resumed,
            compute_s=float(checkpoint.extra.get("compute_s", 0.0)),
        )

    def restrict_space(self) -> None:
        if self.settings.uniform:
            self.space.restrict_to_uniform()

    def allocate(self, sensitivity: dict[str, dict[int, float]], kind: str, limit: float) -> Config:
        """Sizes for the searched hparams that meet ``limit`` (the others stay at full size);
        see :class:`nasframe.searchers.allocator.Allocator`."""
        allocator = Allocator(self.space, self.cost_model, self.settings, self.name)
        return allocator.allocate(sensitivity, kind, limit)


def _in_original_order(scores: torch.Tensor, unit_ids: torch.Tensor) -> torch.Tensor:
    """``scores`` of the units as they are now, re-indexed by their original position."""
    original = torch.empty_like(scores)
    original[unit_ids] = scores
    return original
