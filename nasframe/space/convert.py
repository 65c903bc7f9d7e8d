"""``convert``: turn a model into a :class:`SearchSpace` (dynamic modules, tied hparams).

Each convertible module is swapped for its dynamic version, which shares the parameters (no
weights are copied), and the slots tie discovery grouped share one :class:`Hparam`.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from nasframe.distributed import unwrap
from nasframe.errors import UserInputError
from nasframe.space.dynamic import DynamicModule
from nasframe.space.family import ModelFamily, family_of
from nasframe.space.hparam import ChoiceRule, Hparam
from nasframe.space.search_space import SearchSpace
from nasframe.space.ties import analyse_ties, dynamic_class_for

Rules = Mapping[str, ChoiceRule | Mapping[str, Any]]


@dataclass(frozen=True)
class ConvertRegistry:
    """What ``convert`` needs from the plugins, passed in rather than looked up here.

    ``nasframe.convert`` reads it from the plugin manager once per call
    (:func:`nasframe.plugins.convert_registry`); code that builds its own needs no plugin
    manager at all.
    """

    #: Plain module type -> the ``DynamicModule`` subclass that replaces it.
    dynamic_types: Mapping[type[nn.Module], type[DynamicModule]]
    #: Module types tie discovery looks through (activations, dropout).
    passthrough_types: tuple[type[nn.Module], ...] = ()
    #: Families described rather than traced; the first that matches a model describes it.
    families: tuple[ModelFamily, ...] = ()


def _rule_for(name: str, rules: Rules | None) -> ChoiceRule:
    """The first rule whose glob pattern matches ``name`` (``*`` matches everything)."""
    for pattern, rule in (rules or {}).items():
        if fnmatch.fnmatchcase(name, pattern):
            return rule if isinstance(rule, ChoiceRule) else _parse_rule(pattern, rule)
    return ChoiceRule()


def _parse_rule(pattern: str, rule: Mapping[str, Any]) -> ChoiceRule:
    valid = set(ChoiceRule.__dataclass_fields__)
    unknown = sorted(set(rule) - valid)
    if unknown:
        raise UserInputError(
            f"unknown key(s) {', '.join(unknown)} in the rule for {pattern!r}; "
            f"valid keys: {', '.join(sorted(valid))}."
        )
    values = dict(rule)
    if values.get("ratios") is not None:
        if not isinstance(values["ratios"], list | tuple):
            raise UserInputError(
                f"ratios in the rule for {pattern!r} must be a list of numbers in (0, 1], got "
                f"{values['ratios']!r}; e.g. [0.5, 1.0]."
            )
        values["ratios"] = tuple(values["ratios"])
    return ChoiceRule(**values)


def _groups_sharing_parameters(
    groups: list[list[tuple[str, str]]],
    frozen_slots: list[tuple[str, str]],
    converted: Mapping[str, DynamicModule],
) -> set[int]:
    """Groups that index a parameter dimension another group (or a frozen slot) of another
    module also indexes.

    A weight tied between modules the graph does not connect (an input embedding shared with
    a head that reads another stream) would otherwise be sliced and sorted by two hparams.
    One module may index a dimension with several slots on purpose (KV groups x heads).
    """
    owners: dict[tuple[int, int], set[tuple[int, str]]] = {}
    labelled = [(index, ref) for index, group in enumerate(groups) for ref in group]
    labelled += [(-1, ref) for ref in frozen_slots if ref[0] in converted]
    for index, (module_name, slot) in labelled:
        module = converted[module_name]
        for slot_dim in module.slots[slot]:
            param = module.param_tensor(slot_dim.param)
            if param is not None:
                owners.setdefault((id(param), slot_dim.dim), set()).add((index, module_name))
    entangled: set[int] = set()
    for found in owners.values():
        for index, module_name in found:
            if any(i != index and m != module_name for i, m in found):
                entangled.add(index)
    return {i for i in entangled if i >= 0}


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at dotted path ``name`` inside ``model``."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def _group_name(group: list[tuple[str, str]], modules: Mapping[str, nn.Module]) -> str:
    """Name a tied group after the slot that produces it (``fc1.out_features``), if any."""
    for module_name, slot in group:
        if getattr(type(modules[module_name]), "TRACE_OUTPUT", None) == slot:
            return f"{module_name}.{slot}" if module_name else slot
    module_name, slot = group[0]
    return f"{module_name}.{slot}" if module_name else slot


def convert(
    model: nn.Module, rules: Rules | None = None, *, registry: ConvertRegistry
) -> SearchSpace:
    """Turn ``model`` (in place) into a :class:`SearchSpace`.

    ``rules`` maps glob patterns over hparam names to a :class:`ChoiceRule` (or its fields as
    a dict), e.g. ``{"*.fc1.out_features": {"divisor": 32}, "*": {"ratios": [0.5, 1.0]}}``; the
    first matching pattern wins. A model one of ``registry.families`` matches is described by
    it, any other is traced. Modules tie discovery cannot handle keep their full size and are
    listed once in a warning.
    """
    model = unwrap(model)  # a DistributedDataParallel model is searched as its module
    if isinstance(model, DynamicModule) or any(
        isinstance(m, DynamicModule) for m in model.modules()
    ):
        raise UserInputError("this model is already converted; convert the original model once.")
    dynamic_types = registry.dynamic_types
    family = family_of(model, registry.families)
    if family is not None:
        analysis = family.describe(model)
    else:
        analysis = analyse_ties(model, dynamic_types, registry.passthrough_types)
    modules = dict(model.named_modules())

    converted: dict[str, DynamicModule] = {}
    for name in analysis.used_modules:
        module = modules[name]
        dynamic_class = analysis.converters.get(name) or dynamic_class_for(module, dynamic_types)
        converted[name] = dynamic_class.convert(module)

    view = {name: converted.get(name, module) for name, module in modules.items()}
    hparams: dict[str, Hparam] = {}
    streams: dict[str, list[str]] = {}
    names = analysis.group_names or [_group_name(group, view) for group in analysis.groups]
    order = sorted(
        range(len(analysis.groups)),
        key=lambda i: analysis.used_modules.index(analysis.groups[i][0][0]),
    )
    entangled = _groups_sharing_parameters(analysis.groups, analysis.frozen_slots, converted)
    for index in order:
        group, name = analysis.groups[index], names[index]
        sizes = {converted[m].slot_size(s) for m, s in group}
        if len(sizes) != 1 or index in entangled:
            continue  # inconsistent sizes, or a weight shared across dims: keep full size
        size = sizes.pop()
        hparam = Hparam(size, _rule_for(name, rules).choices(size), name=name)
        hparam.permutable = all(converted[m].unit_modules(s) is None for m, s in group)
        hparams[name] = hparam
        for module_name, slot in group:
            converted[module_name].set_hparam(slot, hparam)
        if index in analysis.residual_streams:
            streams[name] = list(analysis.residual_streams[index])
            hparam.is_residual_stream = True

    # fx names a module once; a module reachable under several names is replaced under all.
    dynamic_of = {id(modules[name]): module for name, module in converted.items()}
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if name and id(module) in dynamic_of:
            replace_module(model, name, dynamic_of[id(module)])
    if family is not None:
        family.prepare(model)
    if analysis.unsupported:
        listed = ", ".join(f"{n} ({t})" for n, t in analysis.unsupported.items())
        warnings.warn(
            f"nasframe keeps these modules at full size (no dynamic version is registered): "
            f"{listed}.",
            stacklevel=2,
        )
    multiples = {n: m for n, m in analysis.uniform_multiples.items() if n in hparams}
    fixed = [name for name in analysis.uniform_fixed if name in hparams]
    return SearchSpace(model, hparams, streams, multiples, fixed)
