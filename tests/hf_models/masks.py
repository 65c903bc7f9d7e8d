"""gradnas's masks on a converted transformers model, with one unit's mask set to zero: what
the exactness tests compare with removing that unit."""

from __future__ import annotations

import torch

from nasframe.app.lm import next_token_loss


def loss_with_mask(model, space, hparam_name: str, zero_unit: int, tokens) -> float:
    """The loss with gradnas's masks attached and one unit's mask set to 0."""
    from gradnas import GradientBinarySearcher
    from gradnas.setups import setup_residual_stream

    searcher = GradientBinarySearcher()
    searcher.space = space
    handles, managers = [], []
    for _, module in space.dynamic_modules():
        for manager, handle in searcher._setup(module):
            handles.append(handle)
            managers.append(manager)
    if hparam_name in space.residual_streams:
        manager, handle = setup_residual_stream(
            model, space.all_hparams[hparam_name], space.residual_streams[hparam_name]
        )
        handles.append(handle)
        managers.append(manager)
    try:
        target = space.all_hparams[hparam_name]
        for manager in managers:
            if manager.hparam is target:
                with torch.no_grad():
                    manager.mask.view(-1, target.max)[:, zero_unit] = 0
        with torch.no_grad():
            return next_token_loss(model, tokens).item()
    finally:
        for handle in handles:
            handle.remove()


def loss_without_unit(model, space, hparam_name: str, unit: int, tokens) -> float:
    """The loss with one unit of ``hparam_name`` removed (sorted last, then cut)."""
    hparam = space.all_hparams[hparam_name]
    importance = torch.ones(hparam.max)
    importance[unit] = 0
    hparam.importance = importance
    space.select({hparam_name: hparam.max - 1})
    with torch.no_grad():
        return next_token_loss(model, tokens).item()
