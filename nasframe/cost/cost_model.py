"""Parameters and FLOPs of any config of a search space, without changing the space.

Parameters are counted analytically from the config; FLOPs come from the fitted per-module
model of :mod:`nasframe.cost.flop_model`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any, NamedTuple

from nasframe.cost.budget import CONSTRAINT_KINDS, Constraint
from nasframe.cost.flop_model import FlopModel, KeptUnits, measure_flops
from nasframe.errors import InfeasibleConstraintError, UserInputError
from nasframe.space.hparam import Hparam
from nasframe.space.search_space import Config, SearchSpace


@dataclass(frozen=True)
class _ParamEntry:
    """One distinct parameter, compiled for counting: per dimension its length, the ids of
    the hparams whose units index it and the product of their full sizes; the layer-like
    units it lives in."""

    dims: tuple[tuple[int, tuple[int, ...], int], ...]  # (length, hparam ids, denominator)
    presence: list[tuple[Hparam, int]]  # (layer-like hparam, position) that must be kept

    @property
    def hparam_ids(self) -> set[int]:
        """The hparams whose sizes this parameter's count depends on."""
        return {i for _, ids, _ in self.dims for i in ids} | {id(hp) for hp, _ in self.presence}

    def count(self, sizes: Mapping[int, int], kept: KeptUnits) -> int:
        """Elements kept under ``sizes``: each hparam on a dimension keeps its fraction of it
        (rows of a GQA query projection are (KV groups kept) x (heads per group kept) x
        head_dim); none when a layer it lives in is dropped."""
        if self.presence and not kept.all_present(self.presence):
            return 0
        return self.count_kept(sizes)

    def count_kept(self, sizes: Mapping[int, int]) -> int:
        """Elements kept under ``sizes`` when every layer it lives in is kept."""
        count = 1
        for length, ids, denominator in self.dims:
            numerator = 1
            for i in ids:
                numerator *= sizes[i]
            count *= length * numerator // denominator if denominator else 0
        return count


class CostModel:
    """Parameters and FLOPs of any config of a search space, without changing the space."""

    def __init__(self, space: SearchSpace, dummy_input: Any = None) -> None:
        self.space = space
        self.dummy_input = dummy_input
        self._param_entries = self._collect_param_entries()
        self._flop_model: FlopModel | None = None

    def _collect_param_entries(self) -> list[_ParamEntry]:
        """For each distinct parameter: its shape, the hparams that index each of its
        dimensions, and the layer-like units it lives in (read from shapes only, so a model
        on the meta device counts the same)."""
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
            by_dim = owned.get(id(param), {})
            dims = tuple(
                (
                    length,
                    tuple(id(hp) for hp in by_dim.get(dim, ())),
                    math.prod(hp.max for hp in by_dim.get(dim, ())),
                )
                for dim, length in enumerate(param.shape)
            )
            entries.append(_ParamEntry(dims, presence.get(id(param), [])))
        return entries

    def _sizes(self, config: Mapping[str, int] | None) -> dict[int, int]:
        """Active size of every hparam (by object id) under ``config``."""
        config = config or {}
        return {id(hp): config.get(name, hp.active) for name, hp in self.space.all_hparams.items()}

    def params(self, config: Mapping[str, int] | None = None) -> int:
        """Distinct parameters of the sub-network ``config`` (tied weights counted once)."""
        sizes = self._sizes(config)
        kept = KeptUnits(sizes)
        return sum(entry.count(sizes, kept) for entry in self._param_entries)

    def params_along(
        self, config: Mapping[str, int] | None, names: Sequence[str], sizes: Sequence[int]
    ) -> list[int]:
        """``params`` of ``config`` with every hparam in ``names`` set to each of ``sizes``.

        The same counts as one ``params`` call per size, but only the parameters those
        hparams index are recounted: an allocation that sweeps every size of every hparam
        then costs (sizes x the parameters each touches), not (sizes x all parameters).
        """
        base_sizes = self._sizes(config)
        varied = [id(self.space.all_hparams[name]) for name in names]
        touched = set().union(*(self._entries_of.get(i, ()) for i in varied))
        kept = KeptUnits(base_sizes)
        fixed = sum(
            entry.count(base_sizes, kept)
            for index, entry in enumerate(self._param_entries)
            if index not in touched
        )
        # A parameter whose layers the sweep does not drop is present or absent throughout.
        present, layered = [], []
        for index in sorted(touched):
            entry = self._param_entries[index]
            if any(id(hp) in varied for hp, _ in entry.presence):
                layered.append(entry)
            elif kept.all_present(entry.presence):
                present.append(entry)
        # Present parameters with the same shape, swept dimensions and fixed sizes (one per
        # layer, mostly) count the same: count each kind once, times how many there are.
        kinds: dict[tuple, int] = {}
        for entry in present:
            key = tuple(
                (
                    length,
                    sum(i in varied for i in ids),
                    math.prod(base_sizes[i] for i in ids if i not in varied),
                    denominator,
                )
                for length, ids, denominator in entry.dims
            )
            kinds[key] = kinds.get(key, 0) + 1
        counts = []
        for size in sizes:
            total = fixed
            for key, multiplicity in kinds.items():
                count = 1
                for length, swept_dims, other, denominator in key:
                    numerator = size**swept_dims * other
                    count *= length * numerator // denominator if denominator else 0
                total += multiplicity * count
            if layered:
                swept = dict(base_sizes)
                swept.update(dict.fromkeys(varied, size))
                kept = KeptUnits(swept)
                total += sum(entry.count(swept, kept) for entry in layered)
            counts.append(total)
        return counts

    @cached_property
    def _entries_of(self) -> dict[int, list[int]]:
        """For each hparam (by id): the indices of the parameter entries it changes."""
        index: dict[int, list[int]] = {}
        for position, entry in enumerate(self._param_entries):
            for hparam_id in entry.hparam_ids:
                index.setdefault(hparam_id, []).append(position)
        return index

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

    def cost_fn(self, kind: str) -> CostFunction:
        """``kind``'s cost as a function of a config, with a fast sweep for allocations."""
        return CostFunction(self, kind)

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


class Interaction(NamedTuple):
    """One term of a cost: it multiplies the sizes of ``names`` and exists while every
    ``(layer-like hparam, position)`` in ``gates`` is kept. Only hparams sharing one interact."""

    names: frozenset[str]
    gates: frozenset[tuple[str, int]]


@dataclass(frozen=True)
class CostFunction:
    """One kind of cost of a :class:`CostModel` as a callable ``config -> float``.

    :meth:`along` gives the costs of one config with some hparams swept over sizes: what a
    cost-aware allocation asks for every size of every hparam. For parameters it recounts
    only what the swept hparams index; other kinds evaluate each config.
    """

    model: CostModel
    kind: str

    def __call__(self, config: Mapping[str, int]) -> float:
        return self.model.cost(self.kind, config)

    def along(
        self, config: Mapping[str, int], names: Sequence[str], sizes: Sequence[int]
    ) -> list[float]:
        """The cost of ``config`` with every hparam in ``names`` set to each of ``sizes``."""
        if self.kind == "params":
            return [float(c) for c in self.model.params_along(config, names, sizes)]
        return [self({**config, **dict.fromkeys(names, size)}) for size in sizes]

    def interacting(self) -> list[Interaction]:
        """The cost's terms, read from the structure rather than probed: one per parameter
        (params) or dynamic module (flops: a polynomial in its own slots), each with the
        hparams it multiplies and the layers it lives in; the cost is their sum."""
        space = self.model.space
        name_of = {id(hp): name for name, hp in space.all_hparams.items()}
        if self.kind == "params":
            sources = [
                ({i for _, ids, _ in entry.dims for i in ids}, entry.presence)
                for entry in self.model._param_entries
            ]
        else:
            presence = space.unit_presence()
            sources = [
                (
                    {id(hp) for s in module.slots if (hp := module.get_hparam(s))},
                    presence.get(id(module), []),
                )
                for _, module in space.dynamic_modules()
            ]
        terms = {
            Interaction(
                frozenset(name_of[i] for i in ids if i in name_of),
                frozenset((name_of[id(hp)], p) for hp, p in gates if id(hp) in name_of),
            )
            for ids, gates in sources
        }
        return sorted(terms, key=lambda t: (sorted(t.names), sorted(t.gates)))

    def kept_positions(self, name: str, size: int) -> frozenset[int]:
        """The positions layer-like ``name`` keeps at ``size``: the open gates of terms."""
        return frozenset(self.model.space.all_hparams[name].kept_positions(size))

    def deltas(
        self, config: Mapping[str, int], changes: Sequence[Mapping[str, int]]
    ) -> list[float]:
        """``cost(config | change) - cost(config)`` for each change, recounting only the
        parameters (or modules' fitted FLOPs) the changed hparams touch: a table of every
        joint size of a few hparams then costs (sizes x what they touch), not (sizes x all)."""
        if self.kind != "params":
            return self._flop_deltas(config, changes)
        swept = {name for change in changes for name in change}
        if len(swept) == 1 and all(changes):  # one hparam's sizes: its sweep is faster
            base, (name,) = self(config), swept
            return [c - base for c in self.along(config, [name], [c[name] for c in changes])]
        return self._param_deltas(config, changes)

    def _param_deltas(
        self, config: Mapping[str, int], changes: Sequence[Mapping[str, int]]
    ) -> list[float]:
        model = self.model
        base = model._sizes(config)
        ids = {name: id(hp) for name, hp in model.space.all_hparams.items()}
        gates = {id(hp) for entry in model._param_entries for hp, _ in entry.presence}
        kept, before, result = KeptUnits(base), {}, []
        for change in changes:
            sizes = {**base, **{ids[name]: size for name, size in change.items()}}
            # Presence changes only where a changed hparam gates a layer.
            now = KeptUnits(sizes) if any(ids[name] in gates for name in change) else kept
            delta = 0
            for index in set().union(*(model._entries_of.get(ids[n], ()) for n in change)):
                entry = model._param_entries[index]
                if index not in before:
                    before[index] = entry.count(base, kept)
                delta += entry.count(sizes, now) - before[index]
            result.append(float(delta))
        return result

    def _flop_deltas(
        self, config: Mapping[str, int], changes: Sequence[Mapping[str, int]]
    ) -> list[float]:
        """From the fitted per-module polynomials (rounded, as predictions are), or measured
        where the fit failed."""
        here = self(config)  # fits the FLOP model on first use
        flops = self.model._flop_model
        if flops is None or not flops.exact:
            return [self({**config, **change}) - here for change in changes]
        uses: dict[str, list[int]] = {}
        for index, (name, module) in enumerate(flops.modules):
            sized = {hp.name for slot in module.slots if (hp := module.get_hparam(slot))}
            for hparam in sized | {hp.name for hp, _ in flops.presence[name]}:
                uses.setdefault(hparam, []).append(index)

        def own(index: int, sizes: Config) -> float:
            name, module = flops.modules[index]
            features = flops._monomials(module, sizes, name)
            return sum(f * t for f, t in zip(features, flops.terms[name].tolist(), strict=True))

        base = self.model._config_with_defaults(config)
        before = cache(lambda index: own(index, base))
        result = []
        for change in changes:
            sizes, touched = {**base, **change}, {i for n in change for i in uses.get(n, ())}
            result.append(float(round(sum(own(i, sizes) - before(i) for i in touched))))
        return result
