"""Solving a map's refit from its statistics, and writing it into the model: its new kept
columns, and its bias (added if missing).

The one-shot and the sequential repair compute updates differently but write them the same
way, and record the same facts in the report: which maps changed, which biases were added
(``nasframe.save`` needs them to rebuild the model) and which were refitted without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from nasframe.reconstruction.refit import fold_bias, refit_kept_columns, refit_least_squares
from nasframe.reconstruction.stats import LinearStats
from nasframe.reconstruction.targets import Target, add_bias
from nasframe.space.search_space import SearchSpace

if TYPE_CHECKING:
    from nasframe.reconstruction.reconstruct import ReconstructionReport


@dataclass
class Update:
    """A target's new kept columns (None: unchanged) and full bias (None: it has none and
    gets none), pending until every chunk has been measured."""

    columns: torch.Tensor | None
    bias: torch.Tensor | None


def write_update(
    space: SearchSpace, target: Target, update: Update, report: ReconstructionReport
) -> None:
    """Write one map's refit, adding the bias it lacks (recorded in ``report``)."""
    if target.bias is None and update.bias is None:
        report.without_bias.append(target.name)
    elif target.bias is None:
        add_bias(space.model, target.bias_name, target.out_features)
        report.added_biases[target.bias_name] = target.out_features
    apply_update(target, update)
    report.reconstructed.append(target.name)


def apply_update(target: Target, update: Update) -> None:
    weight = target.weight
    if update.columns is not None:
        target.matrix()[:, target.kept.to(weight.device)] = update.columns.to(weight.device)
    bias = target.bias
    if update.bias is not None:
        bias.copy_(update.bias.to(device=bias.device, dtype=bias.dtype))


def solve_update(target: Target, stats: LinearStats, lsq: bool, ridge: float) -> Update:
    """A target's refit from its input statistics: the least-squares columns and bias
    (``lsq``), or the bias fold; the kept columns alone where it may not get a bias."""
    weight = target.matrix().detach().to(torch.float64)
    bias = target.bias
    bias = (
        torch.zeros(target.out_features, dtype=torch.float64, device=weight.device)
        if bias is None
        else bias.detach().to(torch.float64)
    )
    if target.bias_free:  # lsq without a bias term: the kept columns alone, on raw moments
        kept = target.kept.to(weight.device)
        moment = (stats.gram / stats.count).to(weight.device)
        columns = refit_kept_columns(weight, moment, kept, ridge)
        return Update(columns.to(target.weight.dtype).cpu(), None)
    mean = stats.mean().to(weight.device)
    if not lsq:
        removed = target.removed.to(weight.device)
        return Update(None, fold_bias(weight, bias, mean, removed).cpu())
    kept = target.kept.to(weight.device)
    covariance = stats.covariance().to(weight.device)
    columns, new_bias = refit_least_squares(weight, bias, mean, covariance, kept, ridge)
    return Update(columns.to(target.weight.dtype).cpu(), new_bias.cpu())
