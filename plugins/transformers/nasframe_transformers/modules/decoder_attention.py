"""Attention of any decoder with separate query/key/value/output projections, made dynamic.

Grouped-query attention whose KV groups and query heads are pruned, for projections of any
name (``q_proj``/``k_proj``/``v_proj`` with ``o_proj``, ``out_proj`` or ``dense``) and to head
counts under any attribute name (``num_heads``, ``num_attention_heads``,
``num_key_value_heads``, ``num_key_value_groups``): the counts the family's forward reads are
properties that follow the kept KV groups and query heads per group, and the export stores
them as plain integers. The slots: whole KV groups, query heads
within every group (the same number in each), and the hidden size on the projections'
outer dimensions; the head dimension is never pruned.

A fused query/key/value projection (Phi-3's ``qkv_proj``: query rows, then key rows, then
value rows) is adopted as a :class:`~nasframe_transformers.modules.fused.FusedProjection`
whose sections play the q/k/v roles (``qkv_proj.q`` ...). A family that reads head counts
from its config at forward time (Phi-3 splits ``qkv_proj``'s output at
``config.num_attention_heads * head_dim``) sees a :class:`HeadCountConfig`: the model's config
with the kept head counts in place of the full ones.

A fused projection of [query, key, value] rows per head (GPT-NeoX's ``query_key_value``, whose
forward reshapes the output to (heads, 3 * head_dim)) needs no sections: every head is its own
KV group, so a KV group's unit is one block of ``3 * head_dim`` contiguous rows, and the
projection plays all three roles as one sliced projection.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch
from torch import nn

from nasframe.space.dynamic import LinearMap, SlotDim
from nasframe_transformers.modules.attention import SlicedProjection, _NoHandle
from nasframe_transformers.modules.fused import FusedProjection, fuse
from nasframe_transformers.modules.wrapped import WrappedModule, plain_linear

# What each kind of count attribute follows: all query heads, KV groups, heads per group.
HEAD_COUNTS = ("num_heads", "num_attention_heads", "n_head", "n_heads")
KV_COUNTS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads")
GROUP_COUNTS = ("num_key_value_groups",)
#: Where attention classes store the head width (GPT-NeoX says ``head_size``).
HEAD_DIM_NAMES = ("head_dim", "head_size")


def head_dim_of(module: nn.Module) -> int | None:
    """The head width an attention module stores, or None when it stores none."""
    state = vars(module)
    return next((state[n] for n in HEAD_DIM_NAMES if isinstance(state.get(n), int)), None)


class HeadCountConfig:
    """A model config seen by one attention block: its head counts are the block's kept
    ones, every other attribute (read or written) is the model config's own."""

    def __init__(self, base: Any, counts: dict[str, int]) -> None:
        self.__dict__["_base"] = base
        self.__dict__["_counts"] = counts

    @property
    def base(self) -> Any:
        """The model config behind the view."""
        return self.__dict__["_base"]

    def __getattr__(self, name: str) -> Any:
        state = self.__dict__
        if name.startswith("__") or "_base" not in state:
            raise AttributeError(name)
        if name in state["_counts"]:
            return state["_counts"][name]
        return getattr(state["_base"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.__dict__["_base"], name, value)


def plain_config(attention: nn.Module, config: Any) -> None:
    """Give an exported attention the model's ``config`` itself when that states the same
    head counts as the attention's view (a uniform result); else the view stays."""
    view = vars(attention).get("config")
    counts = view.__dict__["_counts"] if isinstance(view, HeadCountConfig) else None
    same = counts is not None and all(getattr(config, k) == v for k, v in counts.items())
    if same and view.base is config:
        attention.config = config


def config_head_counts(config: Any, heads: int, kv_heads: int) -> dict[str, int]:
    """The integer head-count fields of ``config``, set to ``heads`` and ``kv_heads``."""
    counts = {}
    for name in (*HEAD_COUNTS, *KV_COUNTS):
        if isinstance(getattr(config, name, None), int):
            counts[name] = kv_heads if name in KV_COUNTS else heads
    return counts


class DynamicDecoderAttention(WrappedModule):
    """Mixin over a family's attention class (see :func:`decoder_attention_class`)."""

    #: Projection names by role: ``q``, ``k``, ``v``, ``o``.
    ROLES: ClassVar[dict[str, str]]
    adopt_projection = staticmethod(SlicedProjection.adopt)
    plain_projection = staticmethod(plain_linear)

    #: Fused projections: name -> its sections (q/k/v roles), in row order.
    FUSED: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: The fused projection of [query, key, value] rows per head ("" when there is none).
    PER_HEAD: ClassVar[str] = ""

    @classmethod
    def adopt(cls, module: nn.Module) -> DynamicDecoderAttention:
        """Adopt ``module``; a fused projection is split into its q/k/v sections (query rows
        are the output projection's inputs, keys and values share the rest equally)."""
        new = super().adopt(module)
        if "config" in cls.DERIVED:
            new.__dict__["_base_config"] = module.config
        for name, sections in cls.FUSED.items():
            fused = getattr(module, name)
            query = getattr(module, cls.ROLES["o"]).in_features
            rest = (fused.out_features - query) // 2
            rows = {"q": query, "k": rest, "v": rest}
            setattr(new, name, FusedProjection.adopt(fused, [(s, rows[s]) for s in sections]))
        return new

    @classmethod
    def convert(cls, module: nn.Module) -> DynamicDecoderAttention:
        new = cls.adopt(module)
        if cls.PER_HEAD:
            new.declare_slots(new.per_head_slots())
            return new
        q, k, v, o = (cls.ROLES[role] for role in "qkvo")
        head_dim = new.decoder_head_dim
        kv_heads = new.get_submodule(k).out_features // head_dim
        per_group = new.get_submodule(q).out_features // (head_dim * kv_heads)
        rows = per_group * head_dim
        new.declare_slots(
            {
                "num_key_value_heads": (
                    *(SlotDim(f"{q}.{p}", 0, rows) for p in ("weight", "bias")),
                    *(SlotDim(f"{n}.{p}", 0, head_dim) for n in (k, v) for p in ("weight", "bias")),
                    SlotDim(f"{o}.weight", 1, rows),
                ),
                "query_heads_per_group": (
                    SlotDim(f"{q}.weight", 0, head_dim, groups=kv_heads),
                    SlotDim(f"{q}.bias", 0, head_dim, groups=kv_heads),
                    SlotDim(f"{o}.weight", 1, head_dim, groups=kv_heads),
                ),
                "hidden_size": (
                    *(SlotDim(f"{n}.weight", 1) for n in (q, k, v)),
                    SlotDim(f"{o}.weight", 0),
                    SlotDim(f"{o}.bias", 0),
                ),
            }
        )
        return new

    def per_head_slots(self) -> dict[str, tuple[SlotDim, ...]]:
        """Slots of a [query, key, value]-per-head projection: a KV group (one head) owns
        its block of ``3 * head_dim`` rows and its ``head_dim`` output columns; one query
        head per group, so that slot has one unit."""
        fused, o, head_dim = self.PER_HEAD, self.ROLES["o"], self.decoder_head_dim
        heads = self.get_submodule(o).in_features // head_dim
        rows = tuple(SlotDim(f"{fused}.{p}", 0, 3 * head_dim) for p in ("weight", "bias"))
        return {
            "num_key_value_heads": (*rows, SlotDim(f"{o}.weight", 1, head_dim)),
            "query_heads_per_group": (SlotDim(f"{o}.weight", 1, head_dim, groups=heads),),
            "hidden_size": (
                SlotDim(f"{fused}.weight", 1),
                SlotDim(f"{o}.weight", 0),
                SlotDim(f"{o}.bias", 0),
            ),
        }

    def projection_weights(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A fused projection's kept rows are its sections' kept rows, in order."""
        if name not in self.FUSED:
            return super().projection_weights(name)
        parts = [f"{name}.{section}" for section in self.FUSED[name]]
        weights = fuse([self.sliced(f"{part}.weight") for part in parts])
        return weights, fuse([self.sliced(f"{part}.bias") for part in parts])

    def head_count_config(self) -> HeadCountConfig:
        """The model config with this block's kept head counts (see the module docstring);
        the ``config`` property of classes made with ``has_config``."""
        base = self.__dict__["_base_config"]
        heads, kv = self._count("num_attention_heads"), self._count("num_key_value_heads")
        return HeadCountConfig(base, config_head_counts(base, heads, kv))

    def linear_maps(self) -> tuple[LinearMap, ...]:
        """The output projection (its inputs are the heads) and the q/k/v projections (their
        inputs are the hidden size; a fused projection plays several roles, and a fused
        section is fed through the projection that holds it)."""
        o = self.ROLES["o"]
        readers = dict.fromkeys(self.ROLES[role] for role in "qkv")
        return (
            LinearMap(f"{o}.weight", f"{o}.bias", 1, input_module=o),
            *(
                LinearMap(f"{p}.weight", f"{p}.bias", 1, input_module=p.partition(".")[0])
                for p in readers
            ),
        )

    @property
    def decoder_head_dim(self) -> int:
        """The head width (``head_dim`` or ``head_size``, stored on the module by every
        family)."""
        head_dim = head_dim_of(self)
        if head_dim is None:
            raise TypeError(f"{type(self).__name__} stores no integer head_dim or head_size")
        return head_dim

    def _count(self, name: str) -> int:
        kv = self.active_size("num_key_value_heads")
        per_group = self.active_size("query_heads_per_group")
        if name in KV_COUNTS:
            return kv
        if name in GROUP_COUNTS:
            return per_group
        return kv * per_group

    def plain_attributes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.DERIVED}


def _count_property(name: str) -> property:
    return property(lambda self: self._count(name), doc=f"``{name}`` of the kept heads.")


@functools.cache
def decoder_attention_class(
    plain_class: type[nn.Module],
    roles: tuple[tuple[str, str], ...],
    counts: tuple[str, ...],
    fused: tuple[tuple[str, tuple[str, ...]], ...] = (),
    has_config: bool = False,
    per_head: str = "",
) -> type[DynamicDecoderAttention]:
    """The dynamic subclass of ``plain_class`` whose projections are ``roles`` (role, path;
    a fused projection's sections are ``name.q`` ...; a per-head fused projection, named by
    ``per_head``, plays q, k and v), whose head-count attributes ``counts`` follow the kept
    heads, and whose ``config`` (when ``has_config``) states them (made once)."""
    names = dict(roles)
    children = tuple(dict.fromkeys(names[role].partition(".")[0] for role in "qkvo"))
    namespace: dict[str, Any] = {
        "PLAIN_CLASS": plain_class,
        "ROLES": names,
        "PROJECTIONS": children,
        "FUSED": dict(fused),
        "PER_HEAD": per_head,
        "DERIVED": frozenset(counts) | ({"config"} if has_config else frozenset()),
        "__module__": DynamicDecoderAttention.__module__,
    }
    namespace |= {name: _count_property(name) for name in counts}
    if has_config:
        namespace["config"] = property(DynamicDecoderAttention.head_count_config)
    return type(f"Dynamic{plain_class.__name__}", (DynamicDecoderAttention, plain_class), namespace)


def head_count_attributes(module: nn.Module) -> tuple[str, ...]:
    """The integer head-count attributes of an attention module that a forward may read."""
    known = HEAD_COUNTS + KV_COUNTS + GROUP_COUNTS
    return tuple(n for n in known if isinstance(vars(module).get(n), int))


def setup_decoder_heads(module: DynamicDecoderAttention) -> Any:
    """gradnas masks for KV groups and query heads per group, on the head outputs entering
    the output projection: a zero mask is exactly a removed head. A KV group's mask
    multiplies the outputs of all its query heads; the within-group mask is one per (group,
    head) and a unit's score sums its heads over the groups."""
    from gradnas.data_manager import GradientDataManager

    groups = module.slot_size("num_key_value_heads")
    heads = module.slot_size("query_heads_per_group")
    kv_manager = GradientDataManager(groups, module)
    kv_manager.hparam = module.get_hparam("num_key_value_heads")
    head_manager = GradientDataManager(
        (groups, heads), module, reduce_func=lambda scores: scores.sum(dim=0)
    )
    head_manager.hparam = module.get_hparam("query_heads_per_group")

    def gate(_: Any, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = args[0]
        mask = kv_manager.mask[:, None] * head_manager.mask
        shaped = x.unflatten(-1, (groups, heads, -1)) * mask[..., None].to(x.dtype)
        return (shaped.flatten(-3), *args[1:])

    managers = [m for m in (kv_manager, head_manager) if m.hparam is not None]
    if not managers:
        return None
    handle = getattr(module, module.ROLES["o"]).register_forward_pre_hook(gate)
    return [(m, handle if i == 0 else _NoHandle()) for i, m in enumerate(managers)]
