"""A searchable dimension: how many units of something (neurons, heads, channels) to keep.

One :class:`Hparam` object is shared by every module that has that dimension, so that setting
``active`` once changes all of them consistently (the residual stream of a transformer is one
hparam owned by the embeddings, every norm and every projection).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from nasframe.errors import UserInputError


@dataclass(frozen=True)
class ChoiceRule:
    """Narrows the sizes an hparam may take.

    ``divisor`` keeps sizes that are multiples of it (hardware-friendly widths such as 32);
    ``ratios`` keeps only ``round(ratio * max)`` sizes (rounded to the divisor); ``min_size``
    is the smallest size ever allowed. The full size is always a choice.
    """

    divisor: int = 1
    ratios: tuple[float, ...] | None = None
    min_size: int = 1

    def __post_init__(self) -> None:
        for field_name in ("divisor", "min_size"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise UserInputError(f"{field_name} must be a whole number, got {value!r}.")
        ratios = self.ratios
        if ratios is not None and (
            isinstance(ratios, str | bytes)
            or not hasattr(ratios, "__iter__")
            or not all(isinstance(r, int | float) and not isinstance(r, bool) for r in ratios)
        ):
            raise UserInputError(
                f"ratios must be a list of numbers in (0, 1], got {ratios!r}; e.g. [0.5, 1.0]."
            )
        if self.divisor < 1:
            raise UserInputError(
                f"divisor must be >= 1, got {self.divisor}; use 1 to allow every size."
            )
        if self.min_size < 0:
            raise UserInputError(f"min_size must be >= 0, got {self.min_size}.")
        for ratio in self.ratios or ():
            if not 0 < ratio <= 1:
                raise UserInputError(
                    f"ratio {ratio} is outside (0, 1]; give fractions of the full size."
                )

    def choices(self, max_size: int) -> list[int]:
        """The allowed sizes for a dimension of ``max_size`` units, ascending."""
        if self.ratios is None:
            candidates = set(range(self.divisor, max_size + 1, self.divisor))
        else:
            candidates = {
                max(self.divisor, round(ratio * max_size / self.divisor) * self.divisor)
                for ratio in self.ratios
            }
        lowest = max(self.min_size, 1) if max_size > 0 else 0
        kept = {c for c in candidates if lowest <= c <= max_size}
        kept.add(max_size)
        return sorted(kept)


class Hparam:
    """The number of kept units of one dimension, with per-unit importance.

    ``importance`` (one score per unit, higher is more important) decides *which* units a
    smaller ``active`` keeps: :attr:`active_slice` selects the ``active`` most important units,
    in their original order. After :meth:`SearchSpace.sort_parameters` the weights are permuted
    so that those units come first and the slice is a plain prefix.
    """

    def __init__(self, max_size: int, choices: Iterable[int] | None = None, name: str = "") -> None:
        if max_size < 0:
            raise ValueError(f"max_size must be >= 0, got {max_size}")
        self.name = name
        self.original = max_size
        self._choices = self._validated_choices(max_size, choices)
        self._active = max_size
        self._importance: torch.Tensor | None = None
        self._importance_descending = True
        # Original index of the unit now at each position; sort_parameters permutes it.
        self.unit_ids = torch.arange(max_size)
        # False for units that cannot be reordered (layers): sort_parameters leaves them
        # in place and a smaller size keeps the most important ones where they are.
        self.permutable = True
        # True for a residual stream (the hidden size): scored on the writes into it.
        self.is_residual_stream = False

    @staticmethod
    def _validated_choices(max_size: int, choices: Iterable[int] | None) -> list[int]:
        values = sorted(set(range(1, max_size + 1) if choices is None else choices))
        if not values or values[-1] != max_size:
            raise ValueError(f"choices {values} must include the full size {max_size}")
        if values[0] < 0:
            raise ValueError(f"choices {values} must be non-negative")
        return values

    @property
    def choices(self) -> list[int]:
        """The allowed sizes, ascending; the last one is the full size."""
        return list(self._choices)

    @choices.setter
    def choices(self, values: Iterable[int]) -> None:
        self._choices = self._validated_choices(self.max, values)
        if self._active not in self._choices:
            self._active = self.max

    @property
    def max(self) -> int:
        return self.original

    @property
    def min(self) -> int:
        return self._choices[0]

    @property
    def is_searchable(self) -> bool:
        """False when only the full size is allowed: the search leaves it alone."""
        return len(self._choices) > 1

    @property
    def active(self) -> int:
        return self._active

    @active.setter
    def active(self, value: int) -> None:
        if value not in self._choices:
            raise UserInputError(
                f"{value} is not an allowed size for hparam {self.name!r}; "
                f"choose one of {_summarise(self._choices)}."
            )
        self._active = int(value)

    @property
    def importance(self) -> torch.Tensor | None:
        return self._importance

    @importance.setter
    def importance(self, scores: torch.Tensor | None) -> None:
        if scores is not None:
            scores = torch.as_tensor(scores).detach().float().cpu().flatten()
            if scores.numel() != self.max:
                raise ValueError(
                    f"hparam {self.name!r} has {self.max} units but got {scores.numel()} scores"
                )
        self._importance = scores
        # Once sort_parameters has permuted the weights the kept units are a plain prefix.
        self._importance_descending = scores is None or bool((scores[:-1] >= scores[1:]).all())

    @property
    def order(self) -> torch.Tensor:
        """Unit indices from most to least important (stable, so ties keep original order)."""
        if self._importance is None:
            return torch.arange(self.max)
        return torch.sort(self._importance, descending=True, stable=True).indices

    @property
    def active_slice(self) -> slice | torch.Tensor:
        """Indexes the kept units along the dimension: a slice, or sorted indices."""
        return self.slice_for(self._active)

    def slice_for(self, size: int) -> slice | torch.Tensor:
        """The units kept at ``size``: the ``size`` most important, in their current order."""
        if size == self.max or self._importance_descending:
            return slice(0, size)
        return torch.sort(self.order[:size]).values

    def kept_positions(self, size: int) -> set[int]:
        """The positions of the units kept at ``size``."""
        kept = self.slice_for(size)
        return set(range(size)) if isinstance(kept, slice) else set(kept.tolist())

    def __repr__(self) -> str:
        return f"Hparam({self.name!r}, active={self.active}, choices={_summarise(self._choices)})"


def _summarise(values: Sequence[int]) -> str:
    if len(values) <= 8:
        return str(list(values))
    return f"[{values[0]}, {values[1]}, ..., {values[-2]}, {values[-1]}] ({len(values)} sizes)"
