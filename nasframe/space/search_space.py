"""The search space: a model whose prunable dimensions are shared hparams.

``convert`` swaps each convertible module for its dynamic version (sharing the parameters, so
no weights are copied) and ties the slots that tie discovery grouped into one :class:`Hparam`.
A config is a plain ``{hparam name: kept units}`` dict: it is what a search returns, what a
checkpoint stores and what ``select`` applies.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from nasframe.errors import UserInputError
from nasframe.space.dynamic import DynamicModule, SlotDim, index_dim, unit_to_element_index
from nasframe.space.hparam import ChoiceRule, Hparam

Config = dict[str, int]
Rules = Mapping[str, ChoiceRule | Mapping[str, Any]]


class SearchSpace:
    """A converted model and its searchable hparams, by name."""

    def __init__(
        self,
        model: nn.Module,
        hparams: Mapping[str, Hparam],
        residual_streams: Mapping[str, list[str]] | None = None,
        uniform_multiples: Mapping[str, int] | None = None,
        uniform_fixed: list[str] | None = None,
    ) -> None:
        self.model = model
        self.all_hparams = dict(hparams)
        # hparam name -> names of the modules whose outputs are summed into that stream
        self.residual_streams = dict(residual_streams or {})
        # hparam name -> a uniform (same size every layer) search keeps only multiples of it
        self.uniform_multiples = dict(uniform_multiples or {})
        # hparam names a uniform search keeps at full size
        self.uniform_fixed = list(uniform_fixed or [])
        # parameter name -> size of each bias reconstruction added (the unpruned architecture
        # has none there): what nasframe.save records so a load rebuilds them
        self.added_biases: dict[str, int] = {}

    def restrict_to_uniform(self) -> None:
        """Keep only the sizes a same-size-every-layer config can express (see convert)."""
        for name, multiple in self.uniform_multiples.items():
            hparam = self.all_hparams.get(name)
            if hparam is not None:
                hparam.choices = [c for c in hparam.choices if c % multiple == 0 or c == hparam.max]
        for name in self.uniform_fixed:
            hparam = self.all_hparams.get(name)
            if hparam is not None:
                hparam.choices = [hparam.max]

    @property
    def hparams(self) -> dict[str, Hparam]:
        """The hparams with more than one allowed size, in a stable order."""
        return {name: hp for name, hp in self.all_hparams.items() if hp.is_searchable}

    def dynamic_modules(self) -> Iterator[tuple[str, DynamicModule]]:
        for name, module in self.model.named_modules():
            if isinstance(module, DynamicModule):
                yield name, module

    def slots_of(self, hparam: Hparam) -> list[tuple[str, DynamicModule, str]]:
        """Every ``(module name, module, slot)`` whose size ``hparam`` sets."""
        return [
            (name, module, slot)
            for name, module in self.dynamic_modules()
            for slot in module.slots
            if module.get_hparam(slot) is hparam
        ]

    def owned_parameter_dims(self, hparam: Hparam) -> list[tuple[torch.Tensor, SlotDim]]:
        """Every distinct parameter dimension ``hparam``'s units index.

        A parameter shared by several modules (tied embeddings) appears once per dimension,
        so sorting permutes it once and importance counts it once.
        """
        found: dict[tuple[int, int], tuple[torch.Tensor, SlotDim]] = {}
        for _, module, slot in self.slots_of(hparam):
            for slot_dim in module.slots[slot]:
                param = module.param_tensor(slot_dim.param)
                if param is not None:
                    found.setdefault((id(param), slot_dim.dim), (param, slot_dim))
        return list(found.values())

    def unit_presence(self) -> dict[int, list[tuple[Hparam, int]]]:
        """For every module and parameter (by id) inside a unit of a layer-like slot: the
        ``(hparam, position)`` pairs that must all be kept for it to exist."""
        presence: dict[int, list[tuple[Hparam, int]]] = {}
        for _, module in self.dynamic_modules():
            for slot in module.slots:
                hparam, units = module.get_hparam(slot), module.unit_modules(slot)
                if hparam is None or units is None:
                    continue
                for position, unit in enumerate(units):
                    for item in (*unit.modules(), *unit.parameters()):
                        presence.setdefault(id(item), []).append((hparam, position))
        return presence

    def kept_units(self) -> dict[str, list[int]]:
        """Positions kept by each hparam whose units are never reordered (layers), when it
        keeps fewer than all: what ``nasframe.save`` records so a load keeps the same ones."""
        return {
            name: sorted(hp.kept_positions(hp.active))
            for name, hp in self.all_hparams.items()
            if not hp.permutable and hp.active < hp.max
        }

    def keep_units(self, kept: Mapping[str, list[int]]) -> None:
        """Make each named hparam keep exactly the listed positions at that size (the inverse
        of :meth:`kept_units`, for a rebuilt model)."""
        for name, positions in kept.items():
            hparam = self.all_hparams.get(name)
            if hparam is None:
                raise UserInputError(
                    f"kept units name an unknown hparam {name!r}; pass the same architecture "
                    "the model was pruned from."
                )
            if not all(isinstance(p, int) and 0 <= p < hparam.max for p in positions):
                raise UserInputError(
                    f"kept units of {name!r} must be positions below {hparam.max}, got "
                    f"{positions!r}; re-export the model."
                )
            importance = torch.zeros(hparam.max)
            importance[list(positions)] = 1.0
            hparam.importance = importance

    def config(self) -> Config:
        return {name: hp.active for name, hp in self.hparams.items()}

    def max_config(self) -> Config:
        return {name: hp.max for name, hp in self.hparams.items()}

    def min_config(self) -> Config:
        return {name: hp.min for name, hp in self.hparams.items()}

    def select(self, config: Mapping[str, int]) -> None:
        """Set the listed hparams (others keep their size); every value is validated first."""
        unknown = sorted(set(config) - set(self.all_hparams))
        if unknown:
            raise UserInputError(
                f"unknown hparam(s) {', '.join(unknown)} in config; valid names: "
                f"{', '.join(self.all_hparams) or 'none'}."
            )
        for name, value in config.items():
            if value not in self.all_hparams[name].choices:
                self.all_hparams[name].active = value  # raises the descriptive error
        for name, value in config.items():
            self.all_hparams[name].active = value

    @contextlib.contextmanager
    def selected(self, config: Mapping[str, int]) -> Iterator[None]:
        """``config`` selected inside the block (hparams it does not name keep their size);
        on leaving, every hparam is back at the size it had, also when the block raises.

        Blocks nest: each restores what the enclosing one had selected. ``config`` is
        validated before anything changes, so a bad one raises with the space untouched.
        """
        previous = {name: hparam.active for name, hparam in self.all_hparams.items()}
        self.select(config)
        try:
            yield
        finally:
            for name, value in previous.items():
                self.all_hparams[name].active = value

    def sample(self, rng: random.Random | None = None) -> Config:
        """Select and return a random config (each hparam uniformly over its choices)."""
        rng = rng or random.Random()
        config = {name: rng.choice(hp.choices) for name, hp in self.hparams.items()}
        self.select(config)
        return config

    @torch.no_grad()
    def sort_parameters(self) -> None:
        """Permute weights so each hparam's most important units come first.

        The permutation is applied consistently to every parameter dimension the hparam owns
        (shared parameters once), so the full-size model computes exactly the same function,
        while a smaller ``active`` now keeps the top units as a contiguous prefix.
        """
        for hparam in self.all_hparams.values():
            if hparam.importance is None or not hparam.permutable:
                continue
            order = hparam.order
            if torch.equal(order, torch.arange(hparam.max)):
                continue
            for param, slot_dim in self.owned_parameter_dims(hparam):
                index = unit_to_element_index(
                    order, hparam.max, slot_dim.unit_size, slot_dim.groups
                )
                param.copy_(index_dim(param, slot_dim.dim, torch.as_tensor(index)))
            for _, module, slot in self.slots_of(hparam):
                module.on_units_sorted(slot, order)
            hparam.importance = hparam.importance[order]
            hparam.unit_ids = hparam.unit_ids[order]
