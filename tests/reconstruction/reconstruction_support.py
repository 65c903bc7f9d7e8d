"""What the reconstruction tests share: tiny float64 MLP spaces, calibration batches, and each
target's calibration error after reconstructing a copy of a space with a mode."""

from __future__ import annotations

import copy

import torch
from models import MLP, seeded
from torch import nn

import nasframe
from nasframe.reconstruction.targets import find_targets


def run(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    return model(batch)


def batches_for(features: int, count: int = 6, rows: int = 24, seed: int = 3) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(rows, features, generator=generator, dtype=torch.float64) for _ in range(count)
    ]


def outputs(model: nn.Module, batches: list) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(batch) for batch in batches])


def mlp_space(widths=(16,), seed: int = 0, importance_seed: int | None = None):
    space = nasframe.convert(seeded(MLP, 6, list(widths), 3, seed=seed).double())
    if importance_seed is not None:  # kept units that are not a prefix
        generator = torch.Generator().manual_seed(importance_seed)
        for hparam in space.all_hparams.values():
            hparam.importance = torch.rand(hparam.max, generator=generator)
    return space


def per_target_mse(space, batches, forward, mode: str, ridge: float = 1e-2) -> dict[str, float]:
    """Each target's mean squared output error on the dense calibration inputs after
    reconstructing a copy of ``space`` with ``mode``: ``W'_K x_K + b'`` against ``W x + b``."""
    space = copy.deepcopy(space)
    targets, _ = find_targets(space)
    captured: dict[str, list[torch.Tensor]] = {t.name: [] for t in targets}
    handles = [
        t.input_module.register_forward_pre_hook(
            lambda _, args, name=t.name: captured[name].append(args[0].detach())
        )
        for t in targets
    ]
    selected = {name: hp.active for name, hp in space.all_hparams.items()}
    for hparam in space.all_hparams.values():
        hparam.active = hparam.max
    with torch.no_grad():
        for batch in batches:
            forward(space.model, batch)
    space.select(selected)
    for handle in handles:
        handle.remove()

    def weights(target):
        bias = target.bias
        bias = torch.zeros(target.out_features) if bias is None else bias.detach()
        return target.matrix().detach().double().clone(), bias.double().clone()

    before = {t.name: weights(t) for t in targets}
    nasframe.reconstruct(space, batches, forward, mode, ridge=ridge)
    errors = {}
    for target in targets:
        x = torch.cat(captured[target.name]).reshape(-1, target.in_features).double()
        (w, b), (w2, b2) = before[target.name], weights(target)
        dense = x @ w.T + b
        pruned = x[:, target.kept] @ w2[:, target.kept].T + b2
        errors[target.name] = float(((dense - pruned) ** 2).mean())
    return errors
