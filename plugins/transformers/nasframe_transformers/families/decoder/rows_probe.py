"""Confirm a fused query/key/value projection's row layout on the model itself.

The layouts are known by the projection's name (Phi-3's ``qkv_proj``: all queries, then
keys, then values; GPT-NeoX's ``query_key_value``: query, key and value rows per head), but a
wrong layout would prune rows of the wrong heads without any error. Heads are interchangeable:
swapping the fused rows of two KV groups (or of two query heads of one group) swaps exactly
those heads' outputs where they enter the output projection, while a swap that follows the
wrong layout mixes queries with keys and values. So one forward with the first layer's rows
swapped, as the recognised layout places them, must give the same head outputs, swapped
back; the weights are restored afterwards. A model whose heads are not interchangeable
(ALiBi slopes differ per head) cannot have heads removed exactly either, and stops here too.
"""

from __future__ import annotations

import torch
from torch import nn

from nasframe_transformers.families.decoder.probe import probe_forward
from nasframe_transformers.families.decoder.structure import (
    AttentionLayout,
    DecoderLayout,
    not_understood,
)

#: Relative change of the head outputs a consistent swap may cause (at least 10 x the
#: weights' float epsilon: the swapped heads run the same operations on the same numbers).
TOLERANCE = 1e-4


def _swap(index: torch.Tensor, start: int, block: int) -> None:
    """Swap the two blocks of ``block`` entries starting at ``start``, in place."""
    first = index[start : start + block].clone()
    index[start : start + block] = index[start + block : start + 2 * block]
    index[start + block : start + 2 * block] = first


def head_swap(attention: AttentionLayout, rows: int, columns: int):
    """(fused row order, output column order) that swap two interchangeable heads as the
    layout places them, or None when there are no two to swap."""
    row, column = torch.arange(rows), torch.arange(columns)
    head_dim, kv = attention.head_dim, attention.kv_heads
    per_group = attention.heads // kv
    if attention.per_head:
        if kv < 2:
            return None
        _swap(row, 0, 3 * head_dim)
        _swap(column, 0, head_dim)
    elif kv >= 2:
        query = attention.heads * head_dim
        _swap(row, 0, per_group * head_dim)
        _swap(row, query, head_dim)
        _swap(row, query + kv * head_dim, head_dim)
        _swap(column, 0, per_group * head_dim)
    elif per_group >= 2:
        _swap(row, 0, head_dim)
        _swap(column, 0, head_dim)
    else:
        return None
    return row, column


def _head_outputs(model: nn.Module, layout: DecoderLayout, output: nn.Module) -> torch.Tensor:
    """The heads' outputs entering the first layer's output projection, on six tokens."""
    seen: list[torch.Tensor] = []
    handle = output.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach()))
    try:
        probe_forward(model, layout, length=6)
    finally:
        handle.remove()
    return seen[0].float()


def check_fused_rows(model: nn.Module, layout: DecoderLayout) -> None:
    """Stop with one line unless swapping two heads of the first layer, as its fused
    projection's recognised layout places them, swaps exactly those heads' outputs."""
    if not layout.layers:
        return
    attention = layout.layers[0].attention
    name = attention.per_head or next(iter(attention.fused), "")
    if not name:
        return
    block = model.get_submodule(f"{layout.stack_path}.0.{attention.path}")
    fused, output = getattr(block, name), getattr(block, attention.roles["o"])
    swap = head_swap(attention, fused.out_features, output.in_features)
    if swap is None:
        return
    rows, columns = swap
    reference = _head_outputs(model, layout, output)
    saved = [(p, p.detach().clone()) for p in (fused.weight, fused.bias) if p is not None]
    try:
        with torch.no_grad():
            for param, original in saved:
                param.copy_(original[rows])
        swapped = _head_outputs(model, layout, output)[..., columns]
    finally:
        with torch.no_grad():
            for param, original in saved:
                param.copy_(original)
    tolerance = max(TOLERANCE, 10 * torch.finfo(fused.weight.dtype).eps)
    change = float((swapped - reference).norm() / reference.norm().clamp_min(1e-12))
    if not change <= tolerance:
        if attention.per_head:
            kind = "query, key and value rows per head"
        else:
            kind = "all query rows, then key rows, then value rows"
        raise not_understood(
            f"{layout.stack_path}.0.{attention.path}.{name}",
            fused,
            f"a fused query/key/value projection whose rows are not {kind} as its name "
            f"says, or whose heads are not interchangeable (swapping two heads' rows changed "
            f"the heads' outputs by {change:.1e} relative)",
        )
