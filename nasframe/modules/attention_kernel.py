"""The attention computation itself, for explicit (possibly sliced) weights and masks.

Both the dynamic attention (weights sliced to the kept heads) and its slim export (weights of
the kept sizes) run this one function, so they compute exactly the same thing; it reproduces
``nn.MultiheadAttention``'s forward, including its masks, for head widths that class cannot
express. A 3-D (per-head) mask may be made for the original heads, of which the kept ones are
selected, or for the kept heads alone, in their original order (:func:`per_head_mask`).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def multihead_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    weights: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None],
    num_heads: int,
    key_padding_mask: torch.Tensor | None,
    need_weights: bool,
    attn_mask: torch.Tensor | None,
    average_attn_weights: bool,
    is_causal: bool,
    full_num_heads: int | None = None,
    kept_heads: slice | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``nn.MultiheadAttention``'s computation for explicit (possibly sliced) weights.

    ``module`` supplies ``batch_first``, ``head_dim``, ``dropout`` and ``head_outputs``.
    A 3-D ``attn_mask`` made for ``full_num_heads`` heads is restricted to ``kept_heads``.
    """
    in_weight, in_bias, out_weight, out_bias = weights
    unbatched = query.dim() == 2  # (target, embed), as nn.MultiheadAttention accepts
    if unbatched:
        batch_dim = 0 if module.batch_first else 1
        query, key, value = (t.unsqueeze(batch_dim) for t in (query, key, value))
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    if not module.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    batch, target_len, _ = query.shape
    source_len = key.shape[1]
    head_dim = module.head_dim
    w_q, w_k, w_v = in_weight.chunk(3)
    b_q, b_k, b_v = in_bias.chunk(3) if in_bias is not None else (None, None, None)

    def heads(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, w, b).view(x.shape[0], x.shape[1], num_heads, head_dim).transpose(1, 2)

    q, k, v = heads(query, w_q, b_q), heads(key, w_k, b_k), heads(value, w_v, b_v)
    mask = _merged_mask(
        attn_mask,
        key_padding_mask,
        is_causal,
        batch,
        num_heads,
        target_len,
        source_len,
        full_num_heads,
        kept_heads,
        q.dtype,
        q.device,
    )
    dropout = module.dropout if module.training else 0.0
    if need_weights:
        scores = q @ k.transpose(-2, -1) / math.sqrt(head_dim)
        if mask is not None:
            scores = scores + mask
        probabilities = scores.softmax(dim=-1)
        attended = F.dropout(probabilities, dropout, training=module.training) @ v
    else:
        probabilities = None
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    attended = module.head_outputs(attended)  # (batch, heads, target, head_dim)
    merged = attended.transpose(1, 2).reshape(batch, target_len, num_heads * head_dim)
    output = F.linear(merged, out_weight, out_bias)
    if not module.batch_first:
        output = output.transpose(0, 1)
    if probabilities is not None and average_attn_weights:
        probabilities = probabilities.mean(dim=1)
    if unbatched:
        output = output.squeeze(batch_dim)
        probabilities = None if probabilities is None else probabilities.squeeze(0)
    return output, probabilities


def _merged_mask(
    attn_mask,
    key_padding_mask,
    is_causal,
    batch,
    num_heads,
    target_len,
    source_len,
    full_num_heads,
    kept_heads,
    dtype,
    device,
) -> torch.Tensor | None:
    """One additive float mask of shape broadcastable to (batch, heads, target, source)."""
    mask = None
    if attn_mask is not None:
        mask = _additive(attn_mask, dtype)
        if mask.dim() == 3:  # (batch * heads, target, source)
            mask = per_head_mask(mask, batch, num_heads, full_num_heads, kept_heads)
        else:
            mask = mask.view(1, 1, target_len, source_len)
    elif is_causal:
        causal = torch.ones(target_len, source_len, dtype=torch.bool, device=device).tril()
        mask = _additive(~causal, dtype).view(1, 1, target_len, source_len)
    if key_padding_mask is not None:
        padding = _additive(key_padding_mask, dtype).view(batch, 1, 1, source_len)
        mask = padding if mask is None else mask + padding
    return mask


def per_head_mask(
    mask: torch.Tensor,
    batch: int,
    num_heads: int,
    full_num_heads: int | None,
    kept_heads: slice | torch.Tensor | None,
) -> torch.Tensor:
    """A 3-D mask ``(batch * heads, target, source)`` as ``(batch, num_heads, target, source)``
    for the heads this module computes, in its order.

    ``kept_heads`` are the original indices of those heads (``full_num_heads`` originally).
    The mask may hold a slice per original head (the kept ones are selected: what the user
    made for the unpruned model) or per kept head, in their original order.
    """
    target_len, source_len = mask.shape[-2:]
    full = full_num_heads or num_heads
    if kept_heads is not None and mask.shape[0] == batch * full:
        if isinstance(kept_heads, torch.Tensor):
            kept_heads = kept_heads.to(mask.device)
        return mask.view(batch, full, target_len, source_len)[:, kept_heads]
    if mask.shape[0] == batch * num_heads:
        grid = mask.view(batch, num_heads, target_len, source_len)
        if isinstance(kept_heads, torch.Tensor) and len(kept_heads) == num_heads:
            ranks = kept_heads.argsort().argsort()  # position of each kept head in the mask
            if not torch.equal(ranks, torch.arange(num_heads, device=ranks.device)):
                grid = grid[:, ranks.to(mask.device)]
        return grid
    choices = f"{batch} x {full} (the original heads)"
    if full != num_heads:
        choices += f" or {batch} x {num_heads} (the kept heads)"
    raise RuntimeError(
        f"a 3-D attn_mask needs batch x heads = {choices} slices, got {mask.shape[0]}"
    )


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean masks (True = not allowed) become -inf; float masks are added as they are."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            mask, float("-inf")
        )
    return mask.to(dtype)
