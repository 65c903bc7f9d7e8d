"""The seed's search loop, which fastnas and gradnas share.

Rank units (``compute_importance``, supplied by an algorithm), sort the weights so the kept
units are the top ones, measure each hparam's *sensitivity* (degradation of the score at each
allowed size), then allocate sizes that meet the constraint: the seed's binary search of one
degradation threshold (``"allocation": "threshold"``) or the cost-aware global greedy
(``"global"``, :mod:`nasframe.searchers.global_allocation`), optionally on normalised
sensitivities. fastnas and gradnas are subclasses that differ only in how they score.
"""

from __future__ import annotations

import math
import time
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from nasframe.errors import InfeasibleConstraintError, UserInputError
from nasframe.searchers.allocation import (
    Allocation,
    Sensitivity,
    smallest_uniform,
    threshold_allocation,
    uniform_allocation,
)
from nasframe.searchers.base import BaseSearcher, ScoreFunc, SearchResult
from nasframe.searchers.checkpoint import SearchCheckpoint
from nasframe.searchers.global_allocation import global_allocation
from nasframe.searchers.normalization import NORMALIZATIONS, normalize_sensitivity
from nasframe.space.search_space import Config

#: How sensitivities become sizes: one degradation threshold for every hparam, or the
#: cost-aware greedy that removes the least damage per unit of cost first.
ALLOCATIONS: dict[str, Allocation] = {
    "threshold": threshold_allocation,
    "global": global_allocation,
}


class BinarySearcher(BaseSearcher):
    """Importance ranking, per-choice sensitivity, and an allocation (one threshold or the
    cost-aware global greedy)."""

    name = "binary"
    #: Whether sensitivities are measured with the user's score_func (fastnas) or derived
    #: from unit scores (gradnas); tells callers such as the CLI what to pass.
    uses_score_func: ClassVar[bool] = True
    #: Longest time between checkpoint writes while measuring sensitivities: an interrupted
    #: search loses at most this much work.
    SAVE_INTERVAL_S: ClassVar[float] = 2.0

    @property
    def default_search_config(self) -> dict[str, Any]:
        return {
            **super().default_search_config,
            "score_func": None,
            # One size per group of per-layer hparams (every layer's FFN width alike), so
            # the result is expressible as a plain config of the model's family.
            "uniform": False,
            "allocation": "threshold",  # see ALLOCATIONS
            "normalize": "none",  # see nasframe.score_normalization
            # Fraction of each hparam's full size an allocation never goes below (0: down
            # to its smallest allowed size).
            "min_keep": 0.0,
        }

    def sanitize_search_config(self, config: Mapping[str, Any] | None) -> dict[str, Any]:
        config = super().sanitize_search_config(config)
        check_allocation_settings(config["allocation"], config["normalize"], config["min_keep"])
        return config

    def __init__(self) -> None:
        super().__init__()
        # JSON-able facts about how importance was computed (e.g. batches used); kept in the
        # checkpoint so a resumed search reports them too.
        self.importance_info: dict[str, Any] = {}

    def hparam_names_for_search(self) -> list[str]:
        """The hparams this algorithm can score; the rest stay at full size."""
        return list(self.space.hparams)

    @abstractmethod
    def compute_importance(self, names: list[str]) -> dict[str, torch.Tensor]:
        """One score per unit of each named hparam (higher = more important)."""

    @property
    def score_func(self) -> ScoreFunc:
        """Higher is better: accuracy, or minus a loss. Evaluated once per choice."""
        func = self.config.get("score_func")
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
        with self.phase("importance"):
            if checkpoint.importance is None:
                checkpoint.importance = {
                    name: _in_original_order(scores, hparams[name].unit_ids)
                    for name, scores in self.compute_importance(names).items()
                }
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

    def allocate(self, sensitivity: dict[str, dict[int, float]], kind: str, limit: float) -> Config:
        """Sizes for the searched hparams that meet ``limit`` (the others stay at full size)."""
        cost = self.cost_model.cost_fn(kind)
        sensitivity = self.allowed_sensitivity(
            normalize_sensitivity(sensitivity, self.config["normalize"])
        )
        smallest = cost({name: min(per_choice) for name, per_choice in sensitivity.items()})
        if smallest > limit:
            original = cost(self.space.max_config())
            floor = (
                f" keeping at least {self.config['min_keep']:.0%} of each (min_keep)"
                if self.config["min_keep"] > 0
                else ""
            )
            raise InfeasibleConstraintError(
                f"{self.name} can only prune {len(sensitivity)} of {len(self.space.hparams)} "
                f"hparams{floor}, whose smallest sub-network has {smallest:,.0f} {kind} "
                f"({100 * smallest / original:.1f}% of the original), above the limit "
                f"{limit:,.0f}; relax the constraint to at least that."
            )
        allocate = ALLOCATIONS[self.config["allocation"]]
        if self.config.get("uniform"):
            full_sizes = {name: self.space.hparams[name].max for name in sensitivity}
            uniform_floor = cost(smallest_uniform(sensitivity, full_sizes))
            if uniform_floor > limit:
                original = cost(self.space.max_config())
                raise InfeasibleConstraintError(
                    f"with the same sizes in every layer (uniform) the smallest sub-network has "
                    f"{uniform_floor:,.0f} {kind} ({100 * uniform_floor / original:.1f}% of the "
                    f"original), above the limit {limit:,.0f}; relax the constraint to at least "
                    "that or search without --uniform."
                )
            per_layer = allocate

            def allocate(sens, cost_fn, lim):
                return uniform_allocation(sens, cost_fn, lim, full_sizes, per_layer)

        try:
            return allocate(sensitivity, cost, limit)
        except ValueError:
            raise InfeasibleConstraintError(
                f"only sizes whose score was not finite (NaN or Inf) would meet the limit "
                f"{limit:,.0f} {kind}; relax the constraint or check score_func."
            ) from None

    def allowed_sensitivity(self, sensitivity: Sensitivity) -> dict[str, dict[int, float]]:
        """``sensitivity`` without the sizes below ``min_keep`` of each hparam's full size
        (the full size always stays)."""
        keep = self.config["min_keep"]
        allowed = {}
        for name, per_choice in sensitivity.items():
            full = self.space.hparams[name].max
            floor = math.ceil(keep * full - 1e-9)  # <= full, since min_keep <= 1
            allowed[name] = {c: d for c, d in per_choice.items() if c >= floor}
        return allowed


def check_allocation_settings(allocation: Any, normalize: Any, min_keep: Any) -> None:
    """One clear error for a bad ``allocation``, ``normalize`` or ``min_keep`` value."""
    for key, value, valid in (
        ("allocation", allocation, tuple(ALLOCATIONS)),
        ("normalize", normalize, NORMALIZATIONS),
    ):
        if value not in valid:
            raise UserInputError(f"{key} must be one of {', '.join(valid)}, got {value!r}.")
    if (
        isinstance(min_keep, bool)
        or not isinstance(min_keep, int | float)
        or not 0 <= min_keep <= 1
    ):
        raise UserInputError(
            f"min_keep must be a fraction of each hparam's size in [0, 1], got {min_keep!r}."
        )


def _in_original_order(scores: torch.Tensor, unit_ids: torch.Tensor) -> torch.Tensor:
    """``scores`` of the units as they are now, re-indexed by their original position."""
    original = torch.empty_like(scores)
    original[unit_ids] = scores
    return original
