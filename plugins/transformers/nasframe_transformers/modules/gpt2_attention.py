"""GPT-2's attention with prunable heads: ``c_attn``'s fused q/k/v columns and ``c_proj``'s rows.

``c_attn``'s fused output holds q, k and v one after another, each with every head, so a head
indexes three ``head_dim`` blocks of its columns. The head dimension is never pruned, and each
attention keeps the scaling it was built with. gradnas masks a head's output where it enters
``c_proj``. Importing this module imports transformers (``Conv1D``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nasframe.space.dynamic import LinearMap, SlotDim
from nasframe_transformers.modules.conv1d import SlicedConv1D, plain_conv1d
from nasframe_transformers.modules.wrapped import WrappedModule, dynamic_subclass

PROJECTIONS = ("c_attn", "c_proj")


class DynamicGPT2Attention(WrappedModule):
    """Mixin over GPT-2's attention class (see :func:`dynamic_gpt2_attention_class`).

    It runs GPT-2's own forward (eager, SDPA, ``reorder_and_upcast_attn``) with the two
    projections sliced; ``num_heads``, ``split_size`` and ``embed_dim`` (the attention's
    width, ``num_heads * head_dim``) follow the kept heads, so the q/k/v split and the head
    reshape see the pruned width while ``head_dim`` and ``scaling`` stay the original ones.
    """

    PROJECTIONS = PROJECTIONS
    # Computed from the kept heads rather than copied from the original.
    DERIVED = frozenset({"num_heads", "split_size", "embed_dim"})
    # c_proj (weight (in, out)) reads the heads; c_attn reads the residual stream.
    LINEAR_MAPS = (
        LinearMap("c_proj.weight", "c_proj.bias", 0, input_module="c_proj"),
        LinearMap("c_attn.weight", "c_attn.bias", 0, input_module="c_attn"),  # a reader
    )
    adopt_projection = staticmethod(SlicedConv1D.adopt)
    plain_projection = staticmethod(plain_conv1d)

    @classmethod
    def convert(cls, module: nn.Module) -> DynamicGPT2Attention:
        new = cls.adopt(module)
        head_dim = module.head_dim
        slots = {
            "num_heads": (
                SlotDim("c_attn.weight", 1, head_dim, groups=3),
                SlotDim("c_attn.bias", 0, head_dim, groups=3),
                SlotDim("c_proj.weight", 0, head_dim),
            ),
            "hidden_size": (
                SlotDim("c_attn.weight", 0),
                SlotDim("c_proj.weight", 1),
                SlotDim("c_proj.bias", 0),
            ),
        }
        new.declare_slots(slots)
        return new

    @property
    def num_heads(self) -> int:
        return self.active_size("num_heads")

    @property
    def split_size(self) -> int:
        """Width of each of q, k and v in ``c_attn``'s output (the kept heads)."""
        return self.num_heads * self.head_dim

    @property
    def embed_dim(self) -> int:
        return self.split_size

    def plain_attributes(self) -> dict[str, Any]:
        return {
            "num_heads": self.num_heads,
            "split_size": self.split_size,
            "embed_dim": self.split_size,
        }


def dynamic_gpt2_attention_class(plain_class: type[nn.Module]) -> type[DynamicGPT2Attention]:
    """The dynamic subclass of a GPT-2 attention class (one per class, made once)."""
    return dynamic_subclass(DynamicGPT2Attention, plain_class)


def setup_gpt2_heads(module: DynamicGPT2Attention) -> Any:
    """gradnas mask per head, on the head outputs entering ``c_proj``: a mask of 0 is
    exactly removing that head (heads only meet in ``c_proj``)."""
    from gradnas.data_manager import GradientDataManager

    hparam = module.get_hparam("num_heads")
    if hparam is None:
        return None
    manager = GradientDataManager(hparam.max, module)
    manager.hparam = hparam

    def gate(_: Any, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = args[0]
        mask = manager.mask if hparam.active == hparam.max else manager.mask[hparam.active_slice]
        shaped = x.unflatten(-1, (mask.numel(), module.head_dim)) * mask[:, None].to(x.dtype)
        return (shaped.flatten(-2), *args[1:])

    return manager, module.c_proj.register_forward_pre_hook(gate)
