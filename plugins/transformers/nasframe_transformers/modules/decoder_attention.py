"""Attention of any decoder with separate query/key/value/output projections, made dynamic.

The generalisation of :mod:`nasframe_transformers.modules.attention` to projections of any
name (``q_proj``/``k_proj``/``v_proj`` with ``o_proj``, ``out_proj`` or ``dense``) and to head
counts under any attribute name (``num_heads``, ``num_attention_heads``,
``num_key_value_heads``, ``num_key_value_groups``): the counts the family's forward reads are
properties that follow the kept KV groups and query heads per group, and the export stores
them as plain integers. The slots are the same as Llama's: whole KV groups, query heads
within every group (the same number in each), and the hidden size on the projections'
outer dimensions; the head dimension is never pruned.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch
from torch import nn

from nasframe.space.dynamic import LinearMap, SlotDim
from nasframe_transformers.modules.attention import SlicedProjection, _NoHandle
from nasframe_transformers.modules.wrapped import WrappedModule, plain_linear

# What each kind of count attribute follows: all query heads, KV groups, heads per group.
HEAD_COUNTS = ("num_heads", "num_attention_heads", "n_head", "n_heads")
KV_COUNTS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads")
GROUP_COUNTS = ("num_key_value_groups",)


class DynamicDecoderAttention(WrappedModule):
    """Mixin over a family's attention class (see :func:`decoder_attention_class`)."""

    #: Projection names by role: ``q``, ``k``, ``v``, ``o``.
    ROLES: ClassVar[dict[str, str]]
    adopt_projection = staticmethod(SlicedProjection.adopt)
    plain_projection = staticmethod(plain_linear)

    @classmethod
    def convert(cls, module: nn.Module) -> DynamicDecoderAttention:
        new = cls.adopt(module)
        q, k, v, o = (cls.ROLES[role] for role in "qkvo")
        head_dim = new.decoder_head_dim
        kv_heads = getattr(module, k).out_features // head_dim
        per_group = getattr(module, q).out_features // (head_dim * kv_heads)
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

    def linear_maps(self) -> tuple[LinearMap, ...]:
        o = self.ROLES["o"]
        return (LinearMap(f"{o}.weight", f"{o}.bias", 1, input_module=o),)

    @property
    def decoder_head_dim(self) -> int:
        """The head width (the family's ``head_dim``, stored on the module by every family)."""
        return int(self.__dict__["head_dim"])

    def _count(self, name: str) -> int:
        kv = self.active_size("num_key_value_heads")
        per_group = self.active_size("query_heads_per_group")
        if name in KV_COUNTS:
            return kv
        if name in GROUP_COUNTS:
            return per_group
        return kv * per_group

    def plain_attributes(self) -> dict[str, Any]:
        return {name: self._count(name) for name in self.DERIVED}


def _count_property(name: str) -> property:
    return property(lambda self: self._count(name), doc=f"``{name}`` of the kept heads.")


@functools.cache
def decoder_attention_class(
    plain_class: type[nn.Module], roles: tuple[tuple[str, str], ...], counts: tuple[str, ...]
) -> type[DynamicDecoderAttention]:
    """The dynamic subclass of ``plain_class`` whose projections are ``roles`` (role, name)
    and whose head-count attributes ``counts`` follow the kept heads (made once)."""
    names = dict(roles)
    namespace: dict[str, Any] = {
        "PLAIN_CLASS": plain_class,
        "ROLES": names,
        "PROJECTIONS": tuple(names[role] for role in "qkvo"),
        "DERIVED": frozenset(counts),
        "__module__": DynamicDecoderAttention.__module__,
    }
    namespace |= {name: _count_property(name) for name in counts}
    return type(f"Dynamic{plain_class.__name__}", (DynamicDecoderAttention, plain_class), namespace)


def head_count_attributes(module: nn.Module) -> tuple[str, ...]:
    """The integer head-count attributes of an attention module that a forward may read."""
    known = HEAD_COUNTS + KV_COUNTS + GROUP_COUNTS
    return tuple(n for n in known if isinstance(vars(module).get(n), int))


def setup_decoder_heads(module: DynamicDecoderAttention) -> Any:
    """gradnas masks for KV groups and query heads per group, on the head outputs entering
    the output projection (as :func:`nasframe_transformers.modules.attention.setup_gqa_heads`
    does for Llama): a zero mask is exactly a removed head."""
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
