"""BERT's prunable attention heads: the self-attention and the output dense that reads them.

A BERT head lives in two sibling modules: its rows of ``query``/``key``/``value`` in
``BertSelfAttention`` and its columns of ``dense`` in ``BertSelfOutput``. One hparam ties a
slot of each: the self-attention's ``num_attention_heads`` (rows, ``head_size`` per unit) and
the output dense's ``in_features``, which :func:`head_input_linear_class` counts in heads
(a plain ``DynamicLinear`` counts single features, and then the two slots would not have the
same number of units). The head size is never pruned.

The dynamic self-attention subclasses the model's own class and runs *its* forward with
sliced projection weights; ``num_attention_heads`` and ``all_head_size`` follow the kept heads,
so eager, SDPA and every other kernel are transformers' own code.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch
from torch import nn

from nasframe.modules.linear import DynamicLinear
from nasframe.space.dynamic import SlotDim
from nasframe_transformers.modules.attention import SlicedProjection
from nasframe_transformers.modules.wrapped import WrappedModule, dynamic_subclass, plain_linear

PROJECTIONS = ("query", "key", "value")


class DynamicBertSelfAttention(WrappedModule):
    """Mixin over a BERT self-attention class (see :func:`dynamic_self_attention_class`)."""

    PROJECTIONS = PROJECTIONS
    # Computed from the kept heads rather than copied from the original.
    DERIVED = frozenset({"num_attention_heads", "all_head_size"})
    adopt_projection = staticmethod(SlicedProjection.adopt)
    plain_projection = staticmethod(plain_linear)

    @classmethod
    def convert(cls, module: nn.Module) -> DynamicBertSelfAttention:
        new = cls.adopt(module)
        head_size = module.attention_head_size
        # Per instance: the unit size is this model's head size.
        slots = {
            "num_attention_heads": tuple(
                SlotDim(f"{name}.{param}", 0, head_size)
                for name in PROJECTIONS
                for param in ("weight", "bias")
            ),
            "hidden_size": tuple(SlotDim(f"{name}.weight", 1) for name in PROJECTIONS),
        }
        new.declare_slots(slots)
        return new

    @property
    def num_attention_heads(self) -> int:
        """The kept heads (the family's forward reshapes by head size, this is for readers)."""
        return self.active_size("num_attention_heads")

    @property
    def all_head_size(self) -> int:
        return self.num_attention_heads * self.attention_head_size

    def plain_attributes(self) -> dict[str, Any]:
        return {
            "num_attention_heads": self.num_attention_heads,
            "all_head_size": self.all_head_size,
        }


def dynamic_self_attention_class(plain_class: type[nn.Module]) -> type[DynamicBertSelfAttention]:
    """The dynamic subclass of a BERT self-attention class (one per class, made once)."""
    return dynamic_subclass(DynamicBertSelfAttention, plain_class)


class DynamicHeadInputLinear(DynamicLinear):
    """A ``DynamicLinear`` whose input features are attention heads of ``HEAD_SIZE``.

    Made per head size by :func:`head_input_linear_class`; gradnas finds its setup through
    this base class.
    """

    HEAD_SIZE: ClassVar[int]


@functools.cache
def head_input_linear_class(head_size: int) -> type[DynamicHeadInputLinear]:
    """The head-input Linear class for ``head_size`` (one per size, made once)."""
    slots = {
        "in_features": (SlotDim("weight", 1, head_size),),
        "out_features": DynamicLinear.SLOTS["out_features"],
    }
    return type(
        f"DynamicHeadInputLinear{head_size}",
        (DynamicHeadInputLinear,),
        {"HEAD_SIZE": head_size, "SLOTS": slots, "__module__": __name__},
    )


def setup_bert_heads(module: DynamicHeadInputLinear) -> Any:
    """gradnas mask on each head's output as it enters the output dense.

    ``m_h = 0`` zeroes head ``h``'s columns of the dense input, which is exactly removing the
    head (heads do not interact before the output dense), so the mask gradient is the
    first-order cost of that removal.
    """
    from gradnas.data_manager import GradientDataManager

    hparam = module.get_hparam("in_features")
    if hparam is None:
        return None
    manager = GradientDataManager(hparam.max, module)
    manager.hparam = hparam

    def gate(_: Any, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = args[0]
        mask = manager.mask[hparam.active_slice].to(x.dtype)  # the heads that ran
        heads = x.unflatten(-1, (-1, module.HEAD_SIZE)) * mask[:, None]
        return (heads.flatten(-2), *args[1:])

    return manager, module.register_forward_pre_hook(gate)
