"""Grouped-query attention of Llama-style models with prunable KV groups and query heads.

Under GQA the query heads come in ``num_key_value_heads`` groups of ``num_key_value_groups``
heads that share one key/value head, laid out group-major in ``q_proj``'s rows. Two hparams
index those rows together: whole KV groups (``num_key_value_heads``, which also index
``k_proj``/``v_proj``) and query heads *within* every group (``query_heads_per_group``), so
every group keeps the same number of heads and ``repeat_kv`` still pairs each query head
with its own key/value head. The head dimension is never pruned (RoPE rotates it).

The dynamic class subclasses the model's own attention class and runs *its* forward: only
the four projections run with sliced weights, and ``num_key_value_groups`` follows the kept
heads per group, so eager, SDPA and every family detail (sliding windows, biases) are the
family's own code.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from nasframe.space.dynamic import DynamicModule, LinearMap, SlotDim
from nasframe_transformers.modules.wrapped import (
    WrappedModule,
    copy_plain_attributes,
    dynamic_subclass,
    plain_linear,
)

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


class SlicedProjection(nn.Linear):
    """A projection of a dynamic attention: for one forward it runs with the weights its
    owner sliced (``override``), so the owner needs no reference from its children."""

    override: tuple[torch.Tensor, torch.Tensor | None] | None = None

    @classmethod
    def adopt(cls, linear: nn.Linear) -> SlicedProjection:
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        new.weight = linear.weight
        new.register_parameter("bias", linear.bias)
        new.train(linear.training)
        return new

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        weight, bias = self.override or (self.weight, self.bias)
        return nn.functional.linear(input, weight, bias)


class DynamicGQAttention(WrappedModule):
    """Mixin over a transformers attention class (see :func:`dynamic_attention_class`)."""

    PROJECTIONS = PROJECTIONS
    DERIVED = frozenset({"num_key_value_groups"})
    # o_proj reads the heads; q/k/v read the hidden size, which is always the residual stream.
    LINEAR_MAPS = (LinearMap("o_proj.weight", "o_proj.bias", 1, input_module="o_proj"),)
    adopt_projection = staticmethod(SlicedProjection.adopt)
    plain_projection = staticmethod(plain_linear)

    @classmethod
    def convert(cls, module: nn.Module) -> DynamicGQAttention:
        new = cls.adopt(module)
        head_dim = module.head_dim
        kv_heads = module.k_proj.out_features // head_dim
        per_group = module.q_proj.out_features // (head_dim * kv_heads)
        group_rows = per_group * head_dim
        slots = {
            "num_key_value_heads": (
                SlotDim("q_proj.weight", 0, group_rows),
                SlotDim("q_proj.bias", 0, group_rows),
                SlotDim("k_proj.weight", 0, head_dim),
                SlotDim("k_proj.bias", 0, head_dim),
                SlotDim("v_proj.weight", 0, head_dim),
                SlotDim("v_proj.bias", 0, head_dim),
                SlotDim("o_proj.weight", 1, group_rows),
            ),
            "query_heads_per_group": (
                SlotDim("q_proj.weight", 0, head_dim, groups=kv_heads),
                SlotDim("q_proj.bias", 0, head_dim, groups=kv_heads),
                SlotDim("o_proj.weight", 1, head_dim, groups=kv_heads),
            ),
            "hidden_size": (
                SlotDim("q_proj.weight", 1),
                SlotDim("k_proj.weight", 1),
                SlotDim("v_proj.weight", 1),
                SlotDim("o_proj.weight", 0),
                SlotDim("o_proj.bias", 0),
            ),
        }
        new.declare_slots(slots)
        return new

    @property
    def num_key_value_groups(self) -> int:
        """Query heads per KV group, as ``repeat_kv`` and SDPA's GQA path read it."""
        return self.active_size("query_heads_per_group")

    def plain_attributes(self) -> dict[str, Any]:
        return {"num_key_value_groups": self.num_key_value_groups}


def dynamic_attention_class(plain_class: type[nn.Module]) -> type[DynamicGQAttention]:
    """The dynamic subclass of a family's attention class (one per class, made once)."""
    return dynamic_subclass(DynamicGQAttention, plain_class)


def setup_gqa_heads(module: DynamicGQAttention) -> Any:
    """gradnas masks for both head hparams, on the head outputs entering ``o_proj``.

    A KV group's mask multiplies the outputs of all its query heads; the within-group mask
    is one per (group, head) and a unit's score sums its heads over the groups.
    """
    from gradnas.data_manager import GradientDataManager

    kv = module.get_hparam("num_key_value_heads")
    per_group = module.get_hparam("query_heads_per_group")
    groups, heads = (
        module.slot_size("num_key_value_heads"),
        module.slot_size("query_heads_per_group"),
    )
    kv_manager = GradientDataManager(groups, module)
    kv_manager.hparam = kv
    head_manager = GradientDataManager(
        (groups, heads), module, reduce_func=lambda scores: scores.sum(dim=0)
    )
    head_manager.hparam = per_group

    def gate(_: Any, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = args[0]
        mask = kv_manager.mask[:, None] * head_manager.mask
        shaped = x.unflatten(-1, (groups, heads, -1)) * mask[..., None].to(x.dtype)
        return (shaped.flatten(-3), *args[1:])

    handle = module.o_proj.register_forward_pre_hook(gate)
    managers = [m for m in (kv_manager, head_manager) if m.hparam is not None]
    if not managers:
        handle.remove()
        return None
    # One hook gates both masks: the first pair's handle removes it, the others are no-ops.
    return [(m, handle if i == 0 else _NoHandle()) for i, m in enumerate(managers)]


class _NoHandle:
    def remove(self) -> None:
        pass


class DynamicHFRMSNorm(DynamicModule):
    """Mixin over a transformers RMSNorm (``weight * x / rms(x)``, computed in fp32)."""

    PLAIN_CLASS: ClassVar[type[nn.Module]]
    SLOTS = {"hidden_size": (SlotDim("weight", 0),)}

    @classmethod
    def convert(cls, module: nn.Module) -> DynamicHFRMSNorm:
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        copy_plain_attributes(module, new, frozenset())
        new.weight = module.weight
        new.train(module.training)
        return new

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.sliced("weight") * hidden_states.to(input_dtype)

    def export(self) -> nn.Module:
        plain = self.PLAIN_CLASS.__new__(self.PLAIN_CLASS)
        nn.Module.__init__(plain)
        copy_plain_attributes(self, plain, frozenset())
        plain.weight = nn.Parameter(self.sliced("weight").detach().clone())
        plain.train(self.training)
        return plain


def dynamic_rmsnorm_class(plain_class: type[nn.Module]) -> type[DynamicHFRMSNorm]:
    """The dynamic subclass of a family's RMSNorm class (one per class, made once)."""
    return dynamic_subclass(DynamicHFRMSNorm, plain_class)
