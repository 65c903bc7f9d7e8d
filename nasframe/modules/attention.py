"""Multi-head attention with prunable heads and embedding width.

``nn.MultiheadAttention`` ties its head width to ``embed_dim / num_heads``, so a model with
fewer heads than its residual width allows cannot be expressed by it. The dynamic version
slices heads and embedding width independently; it exports to ``nn.MultiheadAttention`` when
the kept sizes fit that class, and to :class:`SlimMultiheadAttention` (a plain module with
the same call signature) otherwise. An export with pruned heads remembers which original
heads it kept (the ``kept_heads`` buffer), so a per-head 3-D ``attn_mask`` made for the
original model still works, as it does on the searched model (an ``nn.MultiheadAttention``
export selects them in a forward pre-hook, :func:`select_kept_head_masks`).

Each head's output passes through ``head_outputs`` (an identity module) before the output
projection: that is where a per-head gate can be attached (gradnas puts its head mask there),
whatever attention kernel computes the heads.
"""

from __future__ import annotations

import torch
from torch import nn

from nasframe.modules.attention_kernel import multihead_attention, per_head_mask
from nasframe.space.dynamic import DynamicModule, SlotDim, index_dim, unit_to_element_index


def _register_kept_heads(module: nn.Module, num_heads: int, full_num_heads: int | None) -> None:
    """``full_num_heads``: the heads before pruning; the ``kept_heads`` buffer (saved with the
    weights, so a load restores it) holds the original index of each kept head."""
    module.full_num_heads = full_num_heads
    if full_num_heads is not None and full_num_heads != num_heads:
        module.register_buffer("kept_heads", torch.arange(num_heads))
    else:
        module.kept_heads = None


class SlimMultiheadAttention(nn.Module):
    """Plain multi-head attention whose head width need not be ``embed_dim / num_heads``."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        head_dim: int,
        bias: bool = True,
        dropout: float = 0.0,
        batch_first: bool = False,
        full_num_heads: int | None = None,
    ) -> None:
        super().__init__()
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        self.dropout, self.batch_first = dropout, batch_first
        self.in_proj_weight = nn.Parameter(torch.empty(3 * num_heads * head_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * num_heads * head_dim)) if bias else None
        self.out_proj = nn.Linear(num_heads * head_dim, embed_dim, bias=bias)
        self.head_outputs = nn.Identity()
        _register_kept_heads(self, num_heads, full_num_heads)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(
        self,
        query,
        key,
        value,
        key_padding_mask=None,
        need_weights=True,
        attn_mask=None,
        average_attn_weights=True,
        is_causal=False,
    ):
        weights = (self.in_proj_weight, self.in_proj_bias, self.out_proj.weight, self.out_proj.bias)
        return multihead_attention(
            self,
            query,
            key,
            value,
            weights,
            self.num_heads,
            key_padding_mask,
            need_weights,
            attn_mask,
            average_attn_weights,
            is_causal,
            full_num_heads=self.full_num_heads,
            kept_heads=self.kept_heads,
        )


_ATTN_MASK_POSITION = 5  # nn.MultiheadAttention.forward(query, key, value, kpm, nw, attn_mask)


def select_kept_head_masks(
    module: nn.MultiheadAttention, args: tuple, kwargs: dict
) -> tuple[tuple, dict]:
    """Forward pre-hook of an exported ``nn.MultiheadAttention`` with pruned heads: a per-head
    3-D ``attn_mask`` made for the original heads becomes the kept heads' (one made for the
    kept heads passes unchanged), as on the searched model. A module-level function, so the
    exported model still pickles and deep-copies."""
    positional = len(args) > _ATTN_MASK_POSITION
    mask = args[_ATTN_MASK_POSITION] if positional else kwargs.get("attn_mask")
    if mask is None or mask.dim() != 3:
        return args, kwargs
    query = args[0] if args else kwargs["query"]
    batch_dim = 0 if module.batch_first else 1
    batch = 1 if query.dim() == 2 else query.shape[batch_dim]  # unbatched: (target, embed)
    grid = per_head_mask(mask, batch, module.num_heads, module.full_num_heads, module.kept_heads)
    mask = grid.reshape(-1, *mask.shape[-2:])
    if positional:
        args = (*args[:_ATTN_MASK_POSITION], mask, *args[_ATTN_MASK_POSITION + 1 :])
    else:
        kwargs = {**kwargs, "attn_mask": mask}
    return args, kwargs


class DynamicMultiheadAttention(DynamicModule):
    """``nn.MultiheadAttention`` whose heads (``num_heads``) and width (``embed_dim``) are slots.

    Supported: packed q/k/v projections of equal width, no ``bias_k``/``bias_v``, no
    ``add_zero_attn``; other variants stay plain modules at full size.
    """

    # The dimensions depend on head_dim: each instance declares them (declare_slots).
    SLOTS = {"num_heads": (), "embed_dim": ()}
    TRACE_INPUTS = (("query", "embed_dim"), ("key", "embed_dim"), ("value", "embed_dim"))
    TRACE_OUTPUT = ("embed_dim", None)

    def __init__(self, module: nn.MultiheadAttention) -> None:
        super().__init__()
        self.head_dim = module.head_dim
        slots = {
            "num_heads": (
                SlotDim("in_proj_weight", 0, self.head_dim, 3),
                SlotDim("in_proj_bias", 0, self.head_dim, 3),
                SlotDim("out_proj.weight", 1, self.head_dim),
            ),
            "embed_dim": (
                SlotDim("in_proj_weight", 1),
                SlotDim("out_proj.weight", 0),
                SlotDim("out_proj.bias", 0),
            ),
        }
        self.declare_slots(slots)
        # Original index of the head now at each position (sort_parameters permutes heads),
        # so a per-head attention mask given in the original order still hits the right head.
        device = module.in_proj_weight.device
        self.register_buffer(
            "head_order", torch.arange(module.num_heads, device=device), persistent=False
        )
        self.dropout, self.batch_first = module.dropout, module.batch_first
        self.in_proj_weight, self.in_proj_bias = module.in_proj_weight, module.in_proj_bias
        self.out_proj = module.out_proj
        self.head_outputs = nn.Identity()
        self.train(module.training)

    def on_units_sorted(self, slot: str, order: torch.Tensor) -> None:
        if slot == "num_heads":
            self.head_order = self.head_order[order.to(self.head_order.device)]

    @classmethod
    def supports(cls, module: nn.Module) -> bool:
        return (
            isinstance(module, nn.MultiheadAttention)
            and module._qkv_same_embed_dim
            and module.bias_k is None
            and not module.add_zero_attn
        )

    @classmethod
    def convert(cls, module: nn.Module) -> DynamicMultiheadAttention:
        cls.check_convertible(
            module,
            nn.MultiheadAttention,
            needs="packed q/k/v of equal width, no bias_k/bias_v and no add_zero_attn",
        )
        return cls(module)

    def forward(
        self,
        query,
        key,
        value,
        key_padding_mask=None,
        need_weights=True,
        attn_mask=None,
        average_attn_weights=True,
        is_causal=False,
    ):
        names = ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")
        weights = tuple(self.sliced(name) for name in names)
        heads = self.get_hparam("num_heads")
        kept = self.head_order
        if heads is not None and heads.active < heads.max:
            kept = kept[heads.active_slice]
        return multihead_attention(
            self,
            query,
            key,
            value,
            weights,
            self.active_size("num_heads"),
            key_padding_mask,
            need_weights,
            attn_mask,
            average_attn_weights,
            is_causal,
            full_num_heads=self.slot_size("num_heads"),
            kept_heads=kept,
        )

    def _kept_head_positions(self) -> torch.Tensor:
        """The original index of each kept head, as ``sliced`` returns them (on the CPU)."""
        heads = self.get_hparam("num_heads")
        positions = self.head_order.cpu()
        if heads is not None and heads.active < heads.max:
            positions = positions[heads.active_slice]
        return positions

    def export(self) -> nn.Module:
        heads, embed = self.active_size("num_heads"), self.active_size("embed_dim")
        # Kept heads back in their original order, so the export needs no head_order and
        # per-head masks keep their meaning.
        positions = self._kept_head_positions()
        order = torch.argsort(positions)
        packed = unit_to_element_index(order, heads, self.head_dim, 3)
        per_head = unit_to_element_index(order, heads, self.head_dim, 1)
        in_weight = index_dim(self.sliced("in_proj_weight"), 0, packed)
        in_bias = self.sliced("in_proj_bias")
        in_bias = None if in_bias is None else index_dim(in_bias, 0, packed)
        out_weight = index_dim(self.sliced("out_proj.weight"), 1, per_head)
        out_bias = self.sliced("out_proj.bias")
        bias = in_bias is not None
        full = self.slot_size("num_heads")
        options = {"dropout": self.dropout, "bias": bias, "batch_first": self.batch_first}
        if heads * self.head_dim == embed and (out_bias is not None) == bias:
            plain = nn.MultiheadAttention(embed, heads, **options)
            if heads != full:
                _register_kept_heads(plain, heads, full)
                plain.register_forward_pre_hook(select_kept_head_masks, with_kwargs=True)
        else:
            plain = SlimMultiheadAttention(
                embed, heads, self.head_dim, full_num_heads=full, **options
            )
        plain = plain.to(device=in_weight.device, dtype=in_weight.dtype)
        if getattr(plain, "kept_heads", None) is not None:
            plain.kept_heads.copy_(positions[order])
        with torch.no_grad():
            plain.in_proj_weight.copy_(in_weight)
            plain.out_proj.weight.copy_(out_weight)
            if bias:
                plain.in_proj_bias.copy_(in_bias)
                plain.out_proj.bias.copy_(out_bias)
        return plain
