"""The budget a search must meet: parameters or FLOPs, absolute or a percentage of the original.

A binary search evaluates the cost of many configs, so costs are cheap to evaluate:
parameters are counted analytically from the config, and FLOPs come from a per-module model
fitted once to a few ``FlopCounterMode`` measurements (each module's matmul FLOPs are a
polynomial in its own slot sizes), checked against a fresh measurement before it is trusted.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from nasframe.errors import InfeasibleConstraintError, UserInputError
from nasframe.flops import count_flops
from nasframe.hparam import Hparam
from nasframe.space import Config, SearchSpace

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


@dataclass(frozen=True)
class _ParamEntry:
    shape: tuple[int, ...]
    owned: dict[int, list[Hparam]]  # dimension -> the hparams whose units index it
    presence: list[tuple[Hparam, int]]  # (layer-like hparam, position) that must be kept


class _KeptUnits:
    """Which positions of layer-like hparams a config keeps (cached per size)."""

    def __init__(self, sizes: Mapping[int, int]) -> None:
        self.sizes = sizes
        self._cache: dict[tuple[int, int], set[int]] = {}

    def all_present(self, presence: list[tuple[Hparam, int]]) -> bool:
        for hparam, position in presence:
            size = self.sizes[id(hparam)]
            key = (id(hparam), size)
            if key not in self._cache:
                self._cache[key] = hparam.kept_positions(size)
            if position not in self._cache[key]:
                return False
        return True


class CostModel:
    """Parameters and FLOPs of any config of a search space, without changing the space."""

    def __init__(self, space: SearchSpace, dummy_input: Any = None) -> None:
        self.space = space
        self.dummy_input = dummy_input
        self._param_entries = self._collect_param_entries()
        self._flop_model: _FlopModel | None = None

    def _collect_param_entries(self) -> list[_ParamEntry]:
        """For each distinct parameter: its shape, the hparams that index each of its
        dimensions, and the layer-like units it lives in."""
        owned: dict[int, dict[int, list[Hparam]]] = {}
        for _, module in self.space.dynamic_modules():
            for slot, slot_dims in module.SLOTS.items():
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
        kept = _KeptUnits(sizes)
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
            self._flop_model = _FlopModel(self.space, self.dummy_input)
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


def measure_flops(
    space: SearchSpace, config: Config, dummy_input: Any
) -> tuple[int, dict[str, int]]:
    """Run the model under ``config`` with FlopCounterMode; total and per-module FLOPs.

    The space's config is restored afterwards, even on error.
    """
    saved = space.config()
    try:
        space.select(config)
        return count_flops(space.model, dummy_input)
    except UserInputError:
        raise
    except Exception as error:
        raise UserInputError(
            f"the dummy input does not fit the model ({type(error).__name__}: {error}); pass an "
            "input the model's forward accepts."
        ) from error
    finally:
        space.select(saved)


class _FlopModel:
    """FLOPs of each dynamic module as a polynomial in its slots' sizes, fitted once.

    Every monomial is a product of a subset of the module's slot sizes (a Linear's FLOPs are
    proportional to in_features * out_features). A handful of random configs determine the
    coefficients; a held-out config checks the fit, and if any module's FLOPs are not of this
    form, every prediction falls back to measuring.
    """

    def __init__(self, space: SearchSpace, dummy_input: Any) -> None:
        self.space = space
        self.dummy_input = dummy_input
        presence = space.unit_presence()
        self.modules = [
            (name, module)
            for name, module in space.dynamic_modules()
            if any(module.get_hparam(s) is not None for s in module.SLOTS) or id(module) in presence
        ]
        self.presence = {name: presence.get(id(module), []) for name, module in self.modules}
        rng = random.Random(0)
        configs = [space.max_config(), space.min_config()]
        longest = max((len(m.SLOTS) for _, m in self.modules), default=0)
        configs += [_random_config(space, rng) for _ in range(2**longest + 4)]
        determined = self._top_up(configs, rng)
        measured = [measure_flops(space, c, dummy_input) for c in configs]
        self.constant, self.terms = self._fit(configs, measured)
        check = _random_config(space, rng)
        self.exact = determined and all(
            _close(self.predict_fitted(c), measure_flops(space, c, dummy_input)[0])
            for c in (check, space.max_config())
        )

    def _top_up(self, configs: list[Config], rng: random.Random, extra: int = 64) -> bool:
        """Add random configs until they determine every module's coefficients.

        Random configs can miss a combination a module's polynomial needs (two hparams with
        two choices each, both at the same end in every sample); the fit would then be wrong
        elsewhere yet could pass the check. Returns False if ``extra`` more did not suffice.
        """
        needed = {n: self._rank(m, self._grid(m), n) for n, m in self.modules}
        short = [(n, m) for n, m in self.modules if self._rank(m, configs, n) < needed[n]]
        for _ in range(extra):
            if not short:
                break
            configs.append(_random_config(self.space, rng))
            short = [(n, m) for n, m in short if self._rank(m, configs, n) < needed[n]]
        return not short

    def _grid(self, module: Any) -> list[Config]:
        """Configs that reach every monomial of ``module``: for each of its hparams, one more
        size than the number of its slots that hparam sets (or all its sizes)."""
        uses: dict[int, tuple[Hparam, int]] = {}
        for slot in module.SLOTS:
            hparam = module.get_hparam(slot)
            if hparam is not None:
                uses[id(hparam)] = (hparam, uses.get(id(hparam), (hparam, 0))[1] + 1)
        levels = []
        for hparam, count in uses.values():
            choices = hparam.choices
            k = min(len(choices), count + 1)
            picks = sorted({round(i * (len(choices) - 1) / max(k - 1, 1)) for i in range(k)})
            levels.append([(hparam.name, choices[i]) for i in picks])
        return [dict(combination) for combination in itertools.product(*levels)]

    def _rank(self, module: Any, configs: list[Config], name: str) -> int:
        features = torch.tensor(
            [self._monomials(module, c, name) for c in configs], dtype=torch.float64
        )
        return int(torch.linalg.matrix_rank(features / features.abs().amax(dim=0).clamp(min=1)))

    def _monomials(self, module: Any, config: Config, name: str | None = None) -> list[float]:
        sizes = [_slot_size(module, slot, self.space, config) for slot in module.SLOTS]
        # A module inside a dropped layer costs nothing.
        present = float(self._present(name, config)) if name is not None else 1.0
        return [
            present * math.prod(sizes[i] for i in subset)
            for r in range(len(sizes) + 1)
            for subset in itertools.combinations(range(len(sizes)), r)
        ]

    def _present(self, name: str, config: Config) -> bool:
        presence = self.presence.get(name, [])
        if not presence:
            return True
        sizes = {id(hp): config.get(hp.name, hp.active) for hp, _ in presence}
        return _KeptUnits(sizes).all_present(presence)

    def _fit(self, configs: list[Config], measured: list[tuple[int, dict[str, int]]]):
        names = [name for name, _ in self.modules]
        # A parent's count includes its dynamic children's: subtract each child once, from
        # its nearest dynamic ancestor that ran (a layer list is iterated, never called).
        own_totals = []
        for _, per_module in measured:
            ran = [name for name in names if name in per_module]
            own = {name: per_module.get(name, 0) for name in names}
            for child in names:
                parent = _nearest_ancestor(child, ran)
                if parent is not None:
                    own[parent] -= per_module.get(child, 0)
            own_totals.append(own)
        terms = {}
        for name, module in self.modules:
            features = torch.tensor(
                [self._monomials(module, c, name) for c in configs], dtype=torch.float64
            )
            targets = torch.tensor([[o[name]] for o in own_totals], dtype=torch.float64)
            terms[name] = torch.linalg.lstsq(features, targets, driver="gelsd").solution.flatten()
        constant = measured[0][0] - sum(own_totals[0].values())
        return constant, terms

    def predict_fitted(self, config: Config) -> int:
        total = float(self.constant)
        for name, module in self.modules:
            features = torch.tensor(self._monomials(module, config, name), dtype=torch.float64)
            total += float(features @ self.terms[name])
        return round(total)

    def predict(self, config: Config) -> int:
        if self.exact:
            return self.predict_fitted(config)
        return measure_flops(self.space, config, self.dummy_input)[0]


def _close(predicted: int, measured: int) -> bool:
    return abs(predicted - measured) <= 1e-9 * max(1, measured)


def _nearest_ancestor(name: str, candidates: list[str]) -> str | None:
    ancestors = [c for c in candidates if c != name and (c == "" or name.startswith(c + "."))]
    return max(ancestors, key=len) if ancestors else None


def _slot_size(module: Any, slot: str, space: SearchSpace, config: Config) -> int:
    hparam = module.get_hparam(slot)
    if hparam is None:
        return module.slot_size(slot)
    return config.get(hparam.name, hparam.active)


def _random_config(space: SearchSpace, rng: random.Random) -> Config:
    return {name: rng.choice(hp.choices) for name, hp in space.hparams.items()}
