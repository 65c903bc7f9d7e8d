"""Scaled embeddings (Gemma's ``embed_scale = sqrt(hidden_size)``) after hidden-size pruning.

The pruned model keeps the original scale: it is part of what the model computes. A plain
model rebuilt from the pruned config recomputes the scale from the smaller hidden size, so the
export folds the difference into the weights: the embedding is multiplied by
``old_scale / new_scale`` and its module given the new scale, which gives every token the
same vector. A head tied to that embedding would then see scaled weights too, so the final
norm's gain is multiplied by ``new_scale / old_scale`` to cancel it; the norm's formula (a
plain ``weight`` or Gemma's ``1 + weight``) is read off the norm by running it once.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nasframe.errors import UserInputError


def _scale_of(embedding: nn.Module) -> float | None:
    scale = getattr(embedding, "embed_scale", None)
    if isinstance(scale, torch.Tensor) and scale.numel() == 1:
        return float(scale)
    return float(scale) if isinstance(scale, int | float) else None


def _set_scale(embedding: nn.Module, scale: float) -> None:
    current = embedding.embed_scale
    if isinstance(current, torch.Tensor):
        embedding.embed_scale = torch.tensor(scale, dtype=current.dtype, device=current.device)
    else:
        embedding.embed_scale = scale
    if hasattr(embedding, "scalar_embed_scale"):
        embedding.scalar_embed_scale = scale


def _scale_norm_gain(norm: nn.Module, ratio: float) -> None:
    """Multiply the output of ``norm`` by ``ratio`` through its weight (plain or ``1 + w``)."""
    weight = norm.weight
    probe = torch.randn(2, weight.shape[0], generator=torch.Generator().manual_seed(0))
    probe = probe.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        before = norm(probe)
        for offset in (0.0, 1.0):
            original = weight.detach().clone()
            weight.copy_((original + offset) * ratio - offset)
            if torch.allclose(norm(probe), before * ratio, rtol=1e-3, atol=1e-5):
                return
            weight.copy_(original)
    raise UserInputError(
        f"nasframe cannot fold the embedding scale into {type(norm).__name__} (its gain is "
        "neither weight nor 1 + weight); search with the hidden size kept whole."
    )


def fold_embedding_scale(
    model: nn.Module, embedding: nn.Module, original_hidden: int, final_norm: nn.Module | None
) -> None:
    """Give ``embedding`` the scale a plain model of its new width computes, with weights
    that keep every output the same (see the module docstring)."""
    old = _scale_of(embedding)
    new_hidden = embedding.embedding_dim
    if old is None or new_hidden == original_hidden:
        return
    if not math.isclose(old, math.sqrt(original_hidden), rel_tol=1e-4):
        return  # not the sqrt(hidden_size) pattern: the plain model's scale is not derived
    new = math.sqrt(new_hidden)
    weight = embedding.weight
    tied = any(
        p is weight
        for name, p in model.named_parameters(remove_duplicate=False)
        if not name.startswith(_path_of(model, embedding))
    )
    if tied:
        if final_norm is None or getattr(final_norm, "weight", None) is None:
            raise UserInputError(
                "nasframe cannot fold the embedding scale into a head tied to the embedding "
                "without a final norm; search with the hidden size kept whole."
            )
        _scale_norm_gain(final_norm, new / old)
    with torch.no_grad():
        weight.mul_(old / new)
    _set_scale(embedding, new)


def _path_of(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module) + "."
