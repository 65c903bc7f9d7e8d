"""Modules whose dimensions are owned by hparams and sliced at forward time.

A dynamic module keeps the full-size parameters of the module it replaces (the very same
``nn.Parameter`` objects, so tied weights stay tied) and a table of *slots*: for each prunable
dimension, which parameter dimensions it indexes. Slicing, sorting by importance, parameter
counting and export are all derived from that one table, so a new module type only declares
its slots and how to run and export itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from nasframe.errors import UserInputError
from nasframe.space.hparam import Hparam


@dataclass(frozen=True)
class SlotDim:
    """One parameter dimension indexed by a slot's units.

    ``unit_size`` elements belong to each unit (``head_dim`` for an attention head); the
    dimension is made of ``groups`` equal chunks that each hold every unit (a packed q/k/v
    projection has three).
    """

    param: str
    dim: int
    unit_size: int = 1
    groups: int = 1


@dataclass(frozen=True)
class LinearMap:
    """A linear map ``y = W x + b`` inside a dynamic module, declared so that reconstruction
    (:mod:`nasframe.reconstruction`) can refit its kept input columns from calibration inputs.

    ``weight`` and ``bias`` are parameter paths; the bias may be absent, and reconstruction
    then adds one at that path, so the module's ``SLOTS`` must already index it along the
    output dimension (slicing and export then keep it). ``input_dim`` is the weight dimension
    ``x`` multiplies (1 for ``nn.Linear``, 0 for GPT-2's ``Conv1D``); ``input_module`` is the
    child whose forward receives ``x`` as its first argument, "" for the module itself.
    """

    weight: str
    bias: str
    input_dim: int
    input_module: str = ""


def unit_to_element_index(
    units: slice | torch.Tensor, num_units: int, unit_size: int, groups: int
) -> slice | torch.Tensor:
    """Expand kept unit indices to the element indices of a parameter dimension."""
    if unit_size == 1 and groups == 1:
        return units
    unit_ids = torch.arange(num_units)[units] if isinstance(units, slice) else units
    within = torch.arange(unit_size)
    per_group = (unit_ids[:, None] * unit_size + within[None, :]).flatten()
    chunk = num_units * unit_size
    return torch.cat([per_group + g * chunk for g in range(groups)])


def index_dim(tensor: torch.Tensor, dim: int, index: slice | torch.Tensor) -> torch.Tensor:
    """``tensor`` restricted to ``index`` along ``dim`` (a view for slices)."""
    if isinstance(index, slice):
        if index == slice(0, tensor.shape[dim]):
            return tensor
        return tensor.narrow(dim, index.start, index.stop - index.start)
    return tensor.index_select(dim, index.to(tensor.device))


class DynamicModule(nn.Module):
    """Base class: a module whose slot sizes are read from shared :class:`Hparam` objects.

    Subclasses declare ``SLOTS`` and implement ``forward`` (using :meth:`sliced`),
    ``export`` (a plain module of the active size) and ``convert`` (build from the original
    module, sharing its parameters). A subclass whose slot dimensions depend on the instance
    (a head's width) calls :meth:`declare_slots`; everything reads :attr:`slots`.
    """

    SLOTS: ClassVar[Mapping[str, tuple[SlotDim, ...]]] = {}
    # How the module's call maps onto slots when tracing ties: the last dimension of each
    # named argument (by position or keyword) belongs to a slot, or to no slot (None); the
    # output's last dimension (or each tuple element's) likewise.
    TRACE_INPUTS: ClassVar[tuple[tuple[str, str | None], ...]] = ()
    TRACE_OUTPUT: ClassVar[str | None | tuple[str | None, ...]] = None
    # Linear maps whose input dimension pruning can cut (see LinearMap); none by default.
    LINEAR_MAPS: ClassVar[tuple[LinearMap, ...]] = ()

    @property
    def slots(self) -> Mapping[str, tuple[SlotDim, ...]]:
        """This instance's slot table: what :meth:`declare_slots` set, else the class's
        ``SLOTS``. Read slots through this, never ``SLOTS`` on an instance."""
        return self.__dict__.get("_declared_slots", self.SLOTS)

    def declare_slots(self, slots: Mapping[str, tuple[SlotDim, ...]]) -> None:
        """Give this instance slot dimensions that depend on its sizes (a head's width).

        The class's ``SLOTS`` stays the declaration of which slots exist (tie analysis reads
        it before any instance does): when it names slots, ``slots`` must name the same ones.
        Call it before any hparam is set; the slots start without hparams.
        """
        declared = {slot: tuple(dims) for slot, dims in slots.items()}
        if self.SLOTS and set(declared) != set(self.SLOTS):
            raise TypeError(
                f"{type(self).__name__}.declare_slots got slots {sorted(declared)}, but the "
                f"class declares {sorted(self.SLOTS)}; declare the same slot names."
            )
        self.__dict__["_declared_slots"] = declared
        self.__dict__["_slot_hparams"] = dict.fromkeys(declared)

    @property
    def _hparams(self) -> dict[str, Hparam | None]:
        """Each slot's hparam (None: full size), created on first use, so a subclass built
        by ``__new__`` (adopting an existing module) needs no initialisation call."""
        table = self.__dict__.get("_slot_hparams")
        if table is None:
            table = self.__dict__["_slot_hparams"] = dict.fromkeys(self.slots)
        return table

    @classmethod
    def supports(cls, module: nn.Module) -> bool:
        """Whether this module's configuration can be made dynamic (else it stays plain)."""
        return True

    @classmethod
    def convert(cls, module: nn.Module) -> DynamicModule:
        """A dynamic module that shares ``module``'s parameters and starts at full size."""
        raise NotImplementedError

    @classmethod
    def check_convertible(
        cls, module: nn.Module, plain_type: type[nn.Module], needs: str = "a supported setup"
    ) -> None:
        """Raise unless ``module`` is a ``plain_type`` that :meth:`supports` accepts.

        For ``convert``: real exceptions rather than ``assert``, which ``python -O`` strips,
        so a wrong module would be half-adopted. A module of the wrong type is a programming
        error (TypeError); a right type in a setup this class cannot slice is the caller's to
        change (UserInputError). ``needs`` says what a supported module has.
        """
        if not isinstance(module, plain_type):
            raise TypeError(
                f"{cls.__name__}.convert takes a {plain_type.__name__}, got "
                f"{type(module).__name__}; pass a module of the type it is registered for."
            )
        if not cls.supports(module):
            raise UserInputError(
                f"{cls.__name__} cannot convert this {type(module).__name__}: it needs "
                f"{needs}; leave the module plain, as nasframe.convert does."
            )

    def on_units_sorted(self, slot: str, order: torch.Tensor) -> None:
        """Called after ``sort_parameters`` permuted ``slot``'s units by ``order``."""

    def export(self) -> nn.Module:
        """A plain module with the active sizes and the kept weights (copied)."""
        raise NotImplementedError

    @classmethod
    def _adopt(cls, module: nn.Module, attributes: tuple[str, ...]) -> DynamicModule:
        """A new instance holding ``module``'s attributes (the same Parameter objects), at
        full size; for subclasses of the plain type, whose ``__init__`` would allocate."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        for attr in attributes:
            setattr(new, attr, getattr(module, attr))
        new.train(module.training)
        return new

    def slot_size(self, slot: str) -> int:
        """The full number of units of ``slot``, read from the parameter shapes."""
        first = self.slots[slot][0]
        size = self.param_tensor(first.param).shape[first.dim]
        return size // (first.unit_size * first.groups)

    def get_hparam(self, slot: str) -> Hparam | None:
        return self._hparams[slot]

    def set_hparam(self, slot: str, hparam: Hparam | None) -> None:
        if hparam is not None and hparam.max != self.slot_size(slot):
            raise ValueError(
                f"{type(self).__name__}.{slot} has {self.slot_size(slot)} units, "
                f"hparam {hparam.name!r} has {hparam.max}"
            )
        self._hparams[slot] = hparam

    def active_size(self, slot: str) -> int:
        hparam = self._hparams[slot]
        return self.slot_size(slot) if hparam is None else hparam.active

    def slot_index(self, slot: str, slot_dim: SlotDim) -> slice | torch.Tensor | None:
        """Element index of the kept units along ``slot_dim``, or None when all are kept."""
        hparam = self._hparams[slot]
        if hparam is None or hparam.active == hparam.max:
            return None
        return unit_to_element_index(
            hparam.active_slice, hparam.max, slot_dim.unit_size, slot_dim.groups
        )

    def sliced(self, param_name: str) -> torch.Tensor | None:
        """The parameter restricted to the active units of every slot that indexes it.

        Several slots may index one dimension (a GQA query projection's rows are KV groups x
        query heads per group): an element is kept when every such slot keeps its unit.
        """
        tensor = self.param_tensor(param_name)
        if tensor is None:
            return None
        for dim, refs in self._dims_of(param_name).items():
            index = self._dim_index(refs, tensor.shape[dim])
            if index is not None:
                tensor = index_dim(tensor, dim, index)
        return tensor

    def linear_maps(self) -> tuple[LinearMap, ...]:
        """The linear maps reconstruction may refit (override when they depend on the instance)."""
        return self.LINEAR_MAPS

    def slots_on(self, param_name: str, dim: int) -> list[tuple[str, SlotDim]]:
        """The slots indexing dimension ``dim`` of ``param_name``."""
        return self._dims_of(param_name).get(dim, [])

    def kept_elements(self, param_name: str, dim: int) -> slice | torch.Tensor | None:
        """Element index of what the active config keeps along ``dim`` of ``param_name`` (an
        element is kept when every slot on that dimension keeps it), None when all are kept."""
        length = self.param_tensor(param_name).shape[dim]
        return self._dim_index(self.slots_on(param_name, dim), length)

    def _dims_of(self, param_name: str) -> dict[int, list[tuple[str, SlotDim]]]:
        """The slots indexing each dimension of ``param_name``."""
        dims: dict[int, list[tuple[str, SlotDim]]] = {}
        for slot, slot_dims in self.slots.items():
            for slot_dim in slot_dims:
                if slot_dim.param == param_name:
                    dims.setdefault(slot_dim.dim, []).append((slot, slot_dim))
        return dims

    def _dim_index(
        self, refs: list[tuple[str, SlotDim]], length: int
    ) -> slice | torch.Tensor | None:
        indices = [
            index
            for slot, slot_dim in refs
            if (index := self.slot_index(slot, slot_dim)) is not None
        ]
        if len(indices) <= 1:
            return indices[0] if indices else None
        keep = torch.ones(length, dtype=torch.bool)
        for index in indices:
            kept = torch.zeros(length, dtype=torch.bool)
            kept[index] = True
            keep &= kept
        return keep.nonzero().flatten()

    def unit_modules(self, slot: str) -> list[nn.Module] | None:
        """For a slot whose units are whole submodules (layers), those submodules in order.

        Such a slot owns no parameter dimension: dropping a unit drops every parameter and
        FLOP of its submodule, and its units cannot be reordered (layer order is the model).
        """
        return None

    def param_tensor(self, target: str) -> torch.Tensor | None:
        """The parameter at dotted path ``target``, or None for an absent optional one."""
        module: nn.Module = self
        *path, leaf = target.split(".")
        for part in path:
            module = getattr(module, part)
        return getattr(module, leaf, None)
