"""Input statistics of linear maps over calibration batches, bounded in memory, data-parallel.

Reconstruction needs, per target, the number of input rows ``n``, their sum ``s`` and (least
squares only) ``G = sum x x^T``. ``G`` is ``in x in`` float64, gigabytes for a large model's
FFN down projections together, so targets are measured in chunks whose statistics fit a
byte budget, one pass over the batches per chunk. Sums are accumulated in float64 on the CPU
(each batch's product is computed in float32 or wider, where its activations live); with a
process group every rank runs its share of the batches and the sums are added over the ranks,
so every rank holds the same statistics and applies the same update.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

import nasframe.distributed as distributed

_FLOAT64_BYTES = 8

#: The default statistics bound, relative to the model: an eighth of its weights' bytes, at
#: least 512 MiB (a small model is not measured in dozens of passes) and at most 2 GiB (the
#: old fixed bound). With a fixed 2 GiB a 1.1B model (4.1 GiB of fp32 weights) peaked at
#: 2.23x its weights in reconstruction, and at a quarter (1.03 GiB) at 2.00x: besides the
#: statistics, the kept columns of every refitted map wait until the last chunk.
STATS_FRACTION_OF_WEIGHTS = 0.125
MIN_DEFAULT_STATS_BYTES = 2**29
MAX_DEFAULT_STATS_BYTES = 2 * 2**30


def default_max_stats_bytes(model: nn.Module) -> int:
    """The statistics bound used when the caller gives none: ``STATS_FRACTION_OF_WEIGHTS`` of
    the bytes of ``model``'s parameters (each counted once), clamped to [512 MiB, 2 GiB].

    It only decides how targets are chunked, never what is measured, so the reconstruction
    result is the same whatever it is.
    """
    weights = sum(param.nbytes for param in model.parameters())
    share = int(weights * STATS_FRACTION_OF_WEIGHTS)
    return min(MAX_DEFAULT_STATS_BYTES, max(MIN_DEFAULT_STATS_BYTES, share))


class LinearStats:
    """``n``, ``s = sum x`` and optionally ``G = sum x x^T`` of one map's input rows."""

    def __init__(self, features: int, second_moment: bool) -> None:
        self.features = features
        self.rows = torch.zeros(1, dtype=torch.float64)
        self.sum = torch.zeros(features, dtype=torch.float64)
        self.gram = torch.zeros(features, features, dtype=torch.float64) if second_moment else None

    @staticmethod
    def bytes_needed(features: int, second_moment: bool) -> int:
        return _FLOAT64_BYTES * (1 + features + (features * features if second_moment else 0))

    @property
    def count(self) -> int:
        return int(self.rows.item())

    def add(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.features:
            raise ValueError(
                f"a linear map's input has {x.shape[-1]} features at the full config, expected "
                f"{self.features}; its LinearMap declaration does not match its forward"
            )
        rows = x.detach().reshape(-1, self.features)
        self.rows += rows.shape[0]
        # Summed in float64 where the activations live (no float64 copy of them), whatever
        # the weights' dtype; only the (features,) result crosses to the CPU.
        self.sum += rows.sum(dim=0, dtype=torch.float64).cpu()
        if self.gram is not None:
            # One batch's product in (at least) float32, its sum over batches in float64:
            # a float64 matmul costs 2-4x more on a CPU, and a batch's rounding (~1e-7
            # relative) is far below the least-squares damping (1e-2 of the variance).
            wide = rows.to(torch.promote_types(rows.dtype, torch.float32))
            self.gram += (wide.T @ wide).to(torch.float64).cpu()

    def sum_over_ranks(self) -> None:
        packed = distributed.all_reduce_sum(torch.cat([self.rows, self.sum]))
        self.rows, self.sum = packed[:1].clone(), packed[1:].clone()
        if self.gram is not None:
            distributed.all_reduce_sum(self.gram)

    def mean(self) -> torch.Tensor:
        return self.sum / self.count

    def covariance(self) -> torch.Tensor:
        mean = self.mean()
        return self.gram / self.count - torch.outer(mean, mean)


def plan_chunks(sizes: Sequence[int], second_moment: bool, max_bytes: int) -> list[list[int]]:
    """Consecutive groups of target indices whose statistics fit ``max_bytes`` together (a
    target larger than the budget alone is one chunk: it cannot be split)."""
    needs = [LinearStats.bytes_needed(features, second_moment) for features in sizes]
    return chunk_by_bytes(needs, max_bytes)


def chunk_by_bytes(needs: Sequence[int], max_bytes: int) -> list[list[int]]:
    """Consecutive groups of indices whose ``needs`` (bytes each) add up to at most
    ``max_bytes`` (one larger than the budget alone is one chunk)."""
    chunks: list[list[int]] = []
    used = 0
    for index, need in enumerate(needs):
        if chunks and used + need <= max_bytes:
            chunks[-1].append(index)
            used += need
        else:
            chunks.append([index])
            used = need
    return chunks


def collect(
    model: nn.Module,
    inputs: Sequence[tuple[nn.Module, int]],
    batches: Any,
    forward: Callable[[nn.Module, Any], Any],
    second_moment: bool,
    progress: Callable[..., Any],
    desc: str,
) -> tuple[list[LinearStats], int]:
    """Run ``forward(model, batch)`` over this rank's batches, recording the first input of
    each ``(module, features)`` in ``inputs``: the statistics summed over the ranks, and the
    number of batches (all ranks')."""
    stats = [LinearStats(features, second_moment) for _, features in inputs]
    handles = [
        module.register_forward_pre_hook(_recorder(stat), with_kwargs=True)
        for (module, _), stat in zip(inputs, stats, strict=True)
    ]
    seen = 0
    try:
        total = len(batches) if hasattr(batches, "__len__") else None
        for index, batch in enumerate(progress(batches, desc=desc, total=total)):
            seen = index + 1
            if distributed.mine(index):
                forward(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    for stat in stats:
        stat.sum_over_ranks()
    return stats, seen


def _recorder(stat: LinearStats) -> Callable[..., None]:
    def record(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        x = args[0] if args else next(iter(kwargs.values()))
        stat.add(x)

    return record
