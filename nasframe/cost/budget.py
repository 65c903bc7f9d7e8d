"""The budget a search must meet: parameters or FLOPs, absolute or a percentage of the original.

``Constraint.parse("params=75%")`` is the one place a user's budget is read; the cost of a
config is :class:`nasframe.cost.cost_model.CostModel`'s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nasframe.errors import UserInputError

CONSTRAINT_KINDS = ("params", "flops")
_SUFFIXES = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9, "t": 1e12}
# A sign is accepted here so that a negative amount gets the "must be positive" message.
_AMOUNT = re.compile(
    r"^\s*([+-]?[0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(%|[kmgbt])?\s*$", re.IGNORECASE
)


@dataclass(frozen=True)
class Constraint:
    """One budget: ``kind`` is ``params`` or ``flops``; ``amount`` absolute or a percentage."""

    kind: str
    amount: float
    relative: bool

    @classmethod
    def parse(cls, text: str) -> Constraint:
        """Parse ``"params=75%"``, ``"flops=60%"``, ``"params=5e6"`` or ``"params=5M"``."""
        key, sep, value = str(text).partition("=")
        key = key.strip().lower()
        if not sep or not value.strip():
            raise UserInputError(
                f"constraint {text!r} is not KIND=AMOUNT; write e.g. params=75% or flops=60%."
            )
        if key not in CONSTRAINT_KINDS:
            raise UserInputError(
                f"unknown constraint {key!r}; use one of {', '.join(CONSTRAINT_KINDS)} "
                "(e.g. params=75%)."
            )
        match = _AMOUNT.match(value)
        if match is None:
            raise UserInputError(
                f"constraint amount {value.strip()!r} is not a number; write e.g. {key}=75% "
                f"or {key}=5M (positive, percentages up to 100%)."
            )
        number, unit = float(match.group(1)), (match.group(2) or "").lower()
        if number <= 0:
            raise UserInputError(f"constraint {text!r} must be positive; write e.g. {key}=75%.")
        if unit == "%":
            if number > 100:
                raise UserInputError(
                    f"constraint {text!r} exceeds 100% of the original model; give at most 100%."
                )
            return cls(key, number, relative=True)
        return cls(key, number * _SUFFIXES[unit], relative=False)

    @classmethod
    def from_mapping(cls, constraints: Mapping[str, Any] | str | Constraint) -> Constraint:
        """Accept ``{"params": "75%"}``, ``"params=75%"`` or a Constraint; exactly one budget."""
        if isinstance(constraints, Constraint):
            return constraints
        if isinstance(constraints, str):
            return cls.parse(constraints)
        if len(constraints) != 1:
            raise UserInputError(
                f"give exactly one constraint (got {len(constraints)}), e.g. {{'params': '75%'}}."
            )
        ((key, value),) = constraints.items()
        return cls.parse(f"{key}={value}")

    def limit(self, original: float) -> float:
        """The absolute budget, given the original model's cost."""
        return original * self.amount / 100.0 if self.relative else self.amount

    def __str__(self) -> str:
        amount = f"{self.amount:g}%" if self.relative else f"{self.amount:g}"
        return f"{self.kind}={amount}"
