"""gradnas's search config: the calibration data and loss it scores units with, and when the
scoring stops.

gradnas scores units by mask gradients of ``loss_func`` over ``data_loader``, so both are
required; it measures no sensitivity with a ``score_func`` and ignores one (with a warning).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gradnas.scoring import Convergence, LossFunc
from nasframe.errors import UserInputError
from nasframe.searchers.config import BinarySearchConfig

# The frames between GradnasConfig.__post_init__ and the caller of searcher.search():
# __post_init__, the dataclass __init__, from_mapping, configure, search.
_CALLER_OF_SEARCH = 6


@dataclass(frozen=True)
class GradnasConfig(BinarySearchConfig):
    """What gradnas accepts on top of the binary search's settings."""

    #: Iterable of calibration batches (a list or a DataLoader); required.
    data_loader: Iterable[Any] | None = None
    #: ``loss_func(model, batch)`` -> scalar loss tensor; required.
    loss_func: LossFunc | None = None
    #: Batches used (exactly, unless the scores converge first).
    max_iter_data_loader: int = 128
    #: Divide the summed scores by the number of batches.
    average_scores: bool = False
    #: Relative change of the mean score below which scoring stops early; None: never.
    convergence_tol: float | None = None
    #: Consecutive batches the change must stay below ``convergence_tol``.
    convergence_patience: int = 4
    #: Batches scored before scoring may stop early.
    convergence_min_batches: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.score_func is not None:
            warnings.warn(
                "gradnas ignores the score_func in the search config: it scores units by mask "
                "gradients of loss_func over data_loader.",
                stacklevel=_CALLER_OF_SEARCH,
            )
            # The one write to a frozen config: while it is built, before anyone reads it.
            object.__setattr__(self, "score_func", None)
        for key, example in (
            ("data_loader", "a list or DataLoader of calibration batches"),
            ("loss_func", "loss_func(model, batch) returning a scalar loss tensor"),
        ):
            if getattr(self, key) is None:
                raise UserInputError(f"gradnas needs {key} in the search config: {example}.")
        if not callable(self.loss_func):
            raise UserInputError("loss_func must be callable as loss_func(model, batch).")
        for key in ("max_iter_data_loader", "convergence_patience", "convergence_min_batches"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserInputError(f"{key} must be a whole number >= 1, got {value!r}.")
        if not isinstance(self.average_scores, bool):
            raise UserInputError(
                f"average_scores must be True or False, got {self.average_scores!r}."
            )
        tol = self.convergence_tol
        if tol is not None and (
            isinstance(tol, bool) or not isinstance(tol, int | float) or not tol > 0
        ):
            raise UserInputError(
                f"convergence_tol must be a positive number (or None to never stop early), "
                f"got {tol!r}."
            )

    @property
    def convergence(self) -> Convergence:
        """When the scoring may stop before ``max_iter_data_loader`` batches."""
        return Convergence(
            self.convergence_tol, self.convergence_patience, self.convergence_min_batches
        )
