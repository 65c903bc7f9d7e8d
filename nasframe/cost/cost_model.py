"""Parameters and FLOPs of any config of a search space, without changing the space.

Parameters are counted analytically from the config; FLOPs come from the fitted per-module
model of :mod:`nasframe.cost.flop_model`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nasframe.cost.budget import CONSTRAINT_KINDS, Constraint
from nasframe.cost.flop_model import FlopModel, KeptUnits, measure_flops
from nasframe.errors import InfeasibleConstraintError, UserInputError
from nasframe.space.hparam import Hparam
from nasframe.space.search_space import Config, SearchSpace


@dataclass(frozen=True)
class _ParamEntry:
    shape: tuple[int, ...]
    owned: dict[int, list[Hparam]]  # dimension -> the hparams whose units index it
    presence: list[tuple[Hparam, int]]  # (layer-like hparam, position) that must be kept


class CostModel:
    """Parameters and FLOPs of any config of a search space, without changing the space."""

    def __init__(self, space: SearchSpace, dummy_input: Any = None) -> None:
        self.space = space
        self.dummy_input = dummy_input
        self._param_entries = self._collect_param_entries()
        self._flop_model: FlopModel | None = None

    def _collect_param_entries(self) -> list[_ParamEntry]:
        """For each distinct parameter: its shape, the hparams that index each of its
        dimensions, and the layer-like units it lives in."""
        owned: dict[int, dict[int, list[Hparam]]] = {}
        for _, module in self.space.dynamic_modules():
            for slot, slot_dims in module.slots.items():
                hparam = module.get_hparam(slot)
                for slot_dim in slot_dims:
                    param = module.param_tensor(slot_dim.param)
                    if hparam is not None and param is not None:
                        users = owned.setdefault(id(param), {}).setdefault(slot_dim.dim, [])
                        if all(user is not hparam for user in users):
                            users.append(hparam)
        presence = self.space.unit_presence()
        seen: set[int] = set()
        entries = []
        for param in self.space.model.parameters():
            if id(param) in seen:
                continue
            seen.add(id(param))
            entries.append(
                _ParamEntry(
                    tuple(param.shape), owned.get(id(param), {}), presence.get(id(param), [])
                )
            )
        return entries

    def _sizes(self, config: Mapping[str, int] | None) -> dict[int, int]:
        """Active size of every hparam (by object id) under ``config``."""
        config = config or {}
        return {id(hp): config.get(name, hp.active) for name, hp in self.space.all_hparams.items()}

    def params(self, config: Mapping[str, int] | None = None) -> int:
        """Distinct parameters of the sub-network ``config`` (tied weights counted once)."""
        sizes = self._sizes(config)
        kept = KeptUnits(sizes)
        total = 0
        for entry in self._param_entries:
            if not kept.all_present(entry.presence):
                continue
            count = 1
            for dim, length in enumerate(entry.shape):
                # Each hparam on a dimension keeps its fraction of it: rows of a GQA query
                # projection are (KV groups kept) x (heads per group kept) x head_dim.
                hparams = entry.owned.get(dim, ())
                numerator = math.prod(sizes[id(hp)] for hp in hparams)
                denominator = math.prod(hp.max for hp in hparams)
                count *= length * numerator // denominator if denominator else 0
            total += count
        return total

    def flops(self, config: Mapping[str, int] | None = None) -> int:
        """Forward FLOPs of ``config`` on the dummy input (as FlopCounterMode counts them)."""
        if self._flop_model is None:
            if self.dummy_input is None:
                raise UserInputError(
                    "a flops constraint needs a dummy input to count FLOPs; pass dummy_input "
                    "(a tensor the model accepts) or use a params constraint."
                )
            self._flop_model = FlopModel(self.space, self.dummy_input)
        return self._flop_model.predict(self._config_with_defaults(config))

    def measure_flops(self, config: Mapping[str, int] | None = None) -> int:
        """Count FLOPs by running the model under ``config`` (slow, exact)."""
        if self.dummy_input is None:
            raise UserInputError("counting FLOPs needs a dummy input the model accepts.")
        return measure_flops(self.space, self._config_with_defaults(config), self.dummy_input)[0]

    def _config_with_defaults(self, config: Mapping[str, int] | None) -> Config:
        current = self.space.config()
        current.update(config or {})
        return current

    def cost(self, kind: str, config: Mapping[str, int] | None = None) -> float:
        if kind == "params":
            return float(self.params(config))
        if kind == "flops":
            return float(self.flops(config))
        raise UserInputError(
            f"unknown constraint {kind!r}; use one of {', '.join(CONSTRAINT_KINDS)}."
        )

    def cost_fn(self, kind: str) -> Callable[[Mapping[str, int]], float]:
        return lambda config: self.cost(kind, config)

    def resolve(self, constraint: Constraint) -> float:
        """The absolute limit of ``constraint``; an error naming the smallest reachable cost
        when even the smallest sub-network exceeds it."""
        original = self.cost(constraint.kind, self.space.max_config())
        limit = constraint.limit(original)
        smallest = self.cost(constraint.kind, self.space.min_config())
        if smallest > limit:
            raise InfeasibleConstraintError(
                f"constraint {constraint} asks for {limit:,.0f} {constraint.kind} but the smallest "
                f"reachable sub-network has {smallest:,.0f} ({100 * smallest / original:.1f}% of "
                f"{original:,.0f}); relax the constraint to at least that."
            )
        return limit
