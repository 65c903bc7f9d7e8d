"""The two repairs of a linear map ``y = W x + b`` whose input elements ``R`` were removed.

Both work on float64 statistics of the *dense* inputs ``x`` (mean ``mu``, covariance ``C``)
and give the map's new kept columns and bias, so that the pruned map ``W'_K x_K + b'`` stays
close to the dense output on the calibration data:

- :func:`fold_bias`: the removed inputs are replaced by their mean, ``b' = b + W_R mu_R``.
  It is exact for the mean output and never worsens the mean squared error (it is the best
  constant correction).
- :func:`refit_least_squares`: the kept columns are refitted by ridge regression onto the
  dense output, damped towards the original columns by ``lambda = ridge * mean(diag C_KK)``
  (SparseGPT's relative damping, so ``ridge`` is independent of the activations' scale).
  The objective at ``W'_K = W_K`` is the bias fold's error, so the damped optimum is never
  worse than the fold on the calibration data.
- :func:`refit_kept_columns`: the same refit without a bias term, for a map that has no bias
  and may not get one (a plain config that cannot hold it): on the raw second moment
  ``S = E[x x^T]`` instead of the covariance, its optimum never worse than leaving ``W_K``.
"""

from __future__ import annotations

import torch


def fold_bias(
    weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor, removed: torch.Tensor
) -> torch.Tensor:
    """``b + W[:, R] @ mu[R]`` for ``weight`` ``(out, in)`` in float64."""
    return bias + weight[:, removed] @ mean[removed]


def refit_least_squares(
    weight: torch.Tensor,
    bias: torch.Tensor,
    mean: torch.Tensor,
    covariance: torch.Tensor,
    kept: torch.Tensor,
    ridge: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """New kept columns ``W'_K`` and bias ``b'`` (float64, on ``weight``'s device).

    ``W'_K = (W C[:, K] + lambda W_K) (C_KK + lambda I)^-1`` minimises
    ``E||W (x - mu) - W'_K (x_K - mu_K)||^2 + lambda ||W'_K - W_K||^2``, and
    ``b' = b + W mu - W'_K mu_K`` matches the dense mean output.
    """
    columns = damped_refit(weight, covariance[:, kept], covariance[kept][:, kept], kept, ridge)
    new_bias = bias + weight @ mean - columns @ mean[kept]
    return columns, new_bias


def refit_kept_columns(
    weight: torch.Tensor, moment: torch.Tensor, kept: torch.Tensor, ridge: float
) -> torch.Tensor:
    """New kept columns ``W'_K`` (float64) when there is no bias to refit: the least-squares
    refit of ``W_K`` without a bias term.

    ``W'_K = (W S[:, K] + lambda W_K) (S_KK + lambda I)^-1`` minimises
    ``E||W x - W'_K x_K||^2 + lambda ||W'_K - W_K||^2`` for the second moment ``moment``
    ``S = E[x x^T]``, with ``lambda = ridge * mean(diag S_KK)``; any bias the map has stays.
    """
    return damped_refit(weight, moment[:, kept], moment[kept][:, kept], kept, ridge)


def damped_refit(
    weight: torch.Tensor,
    cross: torch.Tensor,
    gram: torch.Tensor,
    kept: torch.Tensor,
    ridge: float,
) -> torch.Tensor:
    """``W'_K = (W cross + lambda W_K) (gram + lambda I)^-1``, the solve every refit shares:
    ``cross`` ``(in, |K|)`` pairs the dense input with the kept one, ``gram`` ``(|K|, |K|)``
    is the kept input's own second moment (centred or raw), and ``lambda = ridge *
    mean(diag gram)`` damps towards the dense columns ``W_K``."""
    damping = ridge * float(gram.diagonal().mean()) if len(kept) else 0.0
    if ridge > 0 and not damping > 0:
        damping = ridge  # every kept input is constant (or zero): any damping keeps W_K
    system = gram + damping * torch.eye(len(kept), dtype=gram.dtype, device=gram.device)
    target = weight @ cross + damping * weight[:, kept]  # (out, |K|)
    return solve_symmetric(system, target.T).T


def solve_symmetric(system: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``system^-1 rhs`` for a symmetric positive semi-definite ``system``: Cholesky when it
    is definite, else the pseudo-inverse (undamped and singular, e.g. duplicated inputs)."""
    factor, info = torch.linalg.cholesky_ex(system)
    if int(info) == 0:
        return torch.cholesky_solve(rhs, factor)
    return torch.linalg.pinv(system, hermitian=True) @ rhs
