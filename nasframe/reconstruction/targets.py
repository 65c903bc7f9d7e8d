"""Which linear maps of a pruned search space reconstruction can repair, and why not the others.

A *target* is a linear map ``y = W x + b`` (a :class:`~nasframe.dynamic.LinearMap` a dynamic
module declares) whose input dimension the selected config cuts: an FFN down projection whose
width shrank, an attention output projection that lost heads. The kept input elements come
from the module's own slot machinery, so a layout several slots index (GQA groups x heads)
needs no re-derivation here. A map is *skipped*, with the reason, when repairing it would be
wrong rather than merely useless:

- its layer is removed by a depth hparam (it no longer runs);
- nothing of its input is pruned;
- its input is a residual stream, or a normalisation reads its input dimension: the norm
  rescales the kept channels once others are gone, so statistics of the dense inputs do not
  describe the pruned ones (such a *reader* is refitted on paired dense and pruned inputs
  instead, by :mod:`nasframe.reconstruction.readers`, where its input is a norm's output);
- its weight is shared with another module (tied embeddings): changing it changes that one;
- its bias is missing and the module's ``SLOTS`` do not index one where it would be added.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from nasframe.space.dynamic import DynamicModule, LinearMap
from nasframe.space.hparam import Hparam
from nasframe.space.search_space import SearchSpace


@dataclass
class Target:
    """One linear map to repair, with its kept and removed input elements (at the selected
    config, which may differ from the config active while statistics are collected)."""

    name: str  # the module holding the weight ("model.layers.0.self_attn.o_proj")
    module_name: str
    module: DynamicModule
    linear_map: LinearMap
    kept: torch.Tensor  # input element indices, ascending
    removed: torch.Tensor
    # it lacks a bias and may not get one: refitted without a bias term (see reconstruct)
    bias_free: bool = False
    # the hparams indexing its input, by name, with their full sizes: what the sequential
    # repair widens to compute the removed inputs too
    input_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def weight(self) -> nn.Parameter:
        return self.module.param_tensor(self.linear_map.weight)

    @property
    def bias(self) -> nn.Parameter | None:
        return self.module.param_tensor(self.linear_map.bias)

    @property
    def bias_name(self) -> str:
        """The bias's parameter name in the model (where an added one is registered)."""
        return _join(self.module_name, self.linear_map.bias)

    @property
    def in_features(self) -> int:
        return self.weight.shape[self.linear_map.input_dim]

    @property
    def out_features(self) -> int:
        return self.weight.shape[1 - self.linear_map.input_dim]

    @property
    def input_module(self) -> nn.Module:
        """The module whose forward receives ``x`` first."""
        child = self.linear_map.input_module
        return self.module.get_submodule(child) if child else self.module

    def matrix(self) -> torch.Tensor:
        """The weight as ``(out, in)`` (a view: writing into it writes the weight)."""
        return self.weight.movedim(self.linear_map.input_dim, 1)


def find_targets(
    space: SearchSpace, readers: list[Target] | None = None
) -> tuple[list[Target], dict[str, str]]:
    """The linear maps the selected config cuts that can be repaired, and the others with the
    reason each is skipped (by the name of the module holding its weight).

    With ``readers`` given, the maps skipped only because a norm rescales their pruned input
    (readers of a pruned residual stream, whose weight is not shared) are added to it too,
    for :mod:`nasframe.reconstruction.readers`; they stay in the skipped dict until repaired.
    """
    owners = _parameter_owners(space.model)
    removed_by = _removed_by_depth(space)
    normalised = _normalised_hparams(space)
    targets: list[Target] = []
    skipped: dict[str, str] = {}
    for module_name, module in space.dynamic_modules():
        for linear_map in module.linear_maps():
            name = _join(module_name, linear_map.weight.rpartition(".")[0])
            target, reason = _inspect(
                name, module_name, module, linear_map, owners, removed_by, normalised
            )
            if target is not None and not reason:
                targets.append(target)
            else:
                skipped[name] = reason
                if target is not None and readers is not None:
                    readers.append(target)
    return targets, skipped


def bias_reserve(space: SearchSpace, can_add_bias: Callable[[str], bool] | None = None) -> int:
    """At most how many parameters reconstruction can add to ``space``'s model, whatever
    config is selected: the full output size of every map without a bias that some config
    could make a target (its input indexed by an hparam that is neither a residual stream nor
    normalised, its weight not shared) and whose bias ``can_add_bias`` allows (by its
    parameter name; None: every one). A parameter budget that must hold after reconstruction
    is searched this much lower.
    """
    owners = _parameter_owners(space.model)
    normalised = _normalised_hparams(space)
    total = 0
    for module_name, module in space.dynamic_modules():
        for linear_map in module.linear_maps():
            weight = module.param_tensor(linear_map.weight)
            if weight is None or weight.dim() != 2:
                continue
            if module.param_tensor(linear_map.bias) is not None:
                continue
            name = _join(module_name, linear_map.weight.rpartition(".")[0])
            if _never_repairable(name, module, linear_map, owners) is not None:
                continue
            if can_add_bias is not None and not can_add_bias(_join(module_name, linear_map.bias)):
                continue
            hparams = _hparams_on(module, linear_map.weight, linear_map.input_dim)
            if any(
                not hparam.is_residual_stream and id(hparam) not in normalised for hparam in hparams
            ):
                total += weight.shape[1 - linear_map.input_dim]
    return total


def _never_repairable(
    name: str, module: DynamicModule, linear_map: LinearMap, owners: dict[int, list[str]]
) -> str | None:
    """Why no config can make this map a target, whatever it prunes (None: some can)."""
    shared = _shared_with(name, module.param_tensor(linear_map.weight), owners)
    if shared:
        return shared
    if module.param_tensor(linear_map.bias) is None and not _bias_follows_slots(module, linear_map):
        return (
            f"it has no bias and {type(module).__name__}.SLOTS index none at "
            f"{linear_map.bias!r}, so an added one could not follow the output's slicing"
        )
    return None


def _inspect(
    name: str,
    module_name: str,
    module: DynamicModule,
    linear_map: LinearMap,
    owners: dict[int, list[str]],
    removed_by: dict[int, str],
    normalised: dict[int, str],
) -> tuple[Target | None, str]:
    """``(target, "")`` for a map to repair, ``(None, why)`` for one to skip, and
    ``(target, why)`` for a reader: skipped by the one-shot repair, repairable on paired
    inputs."""
    weight = module.param_tensor(linear_map.weight)
    if weight is None or weight.dim() != 2:
        return None, "its weight is not a matrix"
    if id(module) in removed_by:
        return None, f"its layer is removed by {removed_by[id(module)]}"
    input_dim = linear_map.input_dim
    kept = module.kept_elements(linear_map.weight, input_dim)
    if kept is None:
        return None, "nothing of its input is pruned"
    hparams = _hparams_on(module, linear_map.weight, input_dim)
    rescaled = _rescaled_input(hparams, normalised)
    if rescaled:  # a reader: repairable from paired statistics unless its weight is shared
        shared = _shared_with(name, weight, owners)
        return (None if shared else _target(name, module_name, module, linear_map, kept)), (
            shared or rescaled
        )
    reason = _never_repairable(name, module, linear_map, owners)
    if reason is not None:
        return None, reason
    return _target(name, module_name, module, linear_map, kept), ""


def _rescaled_input(hparams: list[Hparam], normalised: dict[int, str]) -> str:
    """Why a norm rescales the map's pruned input ("" when none does)."""
    for hparam in hparams:
        if hparam.is_residual_stream and hparam.active < hparam.max:
            return (
                f"its input is the residual stream {hparam.name}: the norm in front of every "
                "reader rescales the kept channels, so dense statistics do not describe them"
            )
        if id(hparam) in normalised and hparam.active < hparam.max:
            return (
                f"{normalised[id(hparam)]} normalises its input dimension {hparam.name} and "
                "rescales the kept channels, so dense statistics do not describe them"
            )
    return ""


def _shared_with(name: str, weight: torch.Tensor, owners: dict[int, list[str]]) -> str:
    """Why the weight may not change because another module holds it ("" when none does)."""
    others = [owner for owner in owners.get(id(weight), []) if owner != name]
    if others:
        return f"its weight is shared with {others[0]}: changing it would change that too"
    return ""


def _target(
    name: str,
    module_name: str,
    module: DynamicModule,
    linear_map: LinearMap,
    kept: slice | torch.Tensor,
) -> Target:
    weight = module.param_tensor(linear_map.weight)
    input_dim = linear_map.input_dim
    everything = torch.arange(weight.shape[input_dim])
    kept_index = everything[kept] if isinstance(kept, slice) else kept.to(torch.long).cpu()
    mask = torch.ones(len(everything), dtype=torch.bool)
    mask[kept_index] = False
    target = Target(name, module_name, module, linear_map, kept_index, everything[mask])
    hparams = _hparams_on(module, linear_map.weight, input_dim)
    target.input_sizes = {hparam.name: hparam.max for hparam in hparams}
    return target


def add_bias(root: nn.Module, name: str, size: int) -> nn.Parameter:
    """Register a zero bias of ``size`` at parameter path ``name`` inside ``root``, with the
    dtype, device and ``requires_grad`` of its module's ``weight``."""
    owner_name, _, attr = name.rpartition(".")
    owner = root.get_submodule(owner_name) if owner_name else root
    weight = owner.get_parameter("weight")
    bias = nn.Parameter(
        torch.zeros(size, dtype=weight.dtype, device=weight.device),
        requires_grad=weight.requires_grad,
    )
    setattr(owner, attr, bias)
    return bias


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name


def _hparams_on(module: DynamicModule, param: str, dim: int) -> list[Hparam]:
    found = (module.get_hparam(slot) for slot, _ in module.slots_on(param, dim))
    return [hparam for hparam in found if hparam is not None]


def _bias_follows_slots(module: DynamicModule, linear_map: LinearMap) -> bool:
    """Whether a bias added at ``linear_map.bias`` would be sliced like the weight's output
    (trivially so when no slot slices the output)."""
    output_slots = {
        slot for slot, _ in module.slots_on(linear_map.weight, 1 - linear_map.input_dim)
    }
    bias_slots = {slot for slot, _ in module.slots_on(linear_map.bias, 0)}
    return output_slots == bias_slots


def _parameter_owners(model: nn.Module) -> dict[int, list[str]]:
    """For every parameter (by id), the names of the modules holding it directly."""
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        for param in module._parameters.values():
            if param is not None:
                owners.setdefault(id(param), []).append(name)
    return owners


def _removed_by_depth(space: SearchSpace) -> dict[int, str]:
    """Modules (by id) inside a unit a layer-like hparam drops, with that hparam's name."""
    removed: dict[int, str] = {}
    kept: dict[int, set[int]] = {}
    for item, units in space.unit_presence().items():
        for hparam, position in units:
            if id(hparam) not in kept:
                kept[id(hparam)] = hparam.kept_positions(hparam.active)
            if position not in kept[id(hparam)]:
                removed[item] = hparam.name
    return removed


def _normalised_hparams(space: SearchSpace) -> dict[int, str]:
    """Hparams (by id) that size a normalisation layer, with that layer's name."""
    found: dict[int, str] = {}
    norms = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm)
    for name, module in space.dynamic_modules():
        if isinstance(module, norms):
            for slot in module.slots:
                hparam = module.get_hparam(slot)
                if hparam is not None:
                    found.setdefault(id(hparam), name)
    return found
