"""What the job measures of a model, before and after pruning.

Perplexity and mean loss on token batches, split over the ranks of a data-parallel run (see
:mod:`nasframe.distributed`), plus the parameter and FLOP counts: the figures a user compares
in ``summary.json``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

import nasframe.distributed as distributed
from nasframe.app.lm import next_token_loss, perplexity
from nasframe.cost.flops import count_flops


@dataclass(frozen=True)
class Measurement:
    """A model's figures on the evaluation text."""

    perplexity: float
    params: int
    flops: int

    def line(self, prefix: str) -> str:
        """The one log line of these figures, e.g. ``before: perplexity 12.345, ...``."""
        return (
            f"{prefix} perplexity {self.perplexity:.3f}, {self.params:,} params, "
            f"{self.flops:,} FLOPs"
        )


def measure(
    model: torch.nn.Module,
    batches: Sequence[torch.Tensor],
    dummy_input: torch.Tensor,
    label: str | None,
) -> Measurement:
    """Perplexity of ``model`` on ``batches`` (a progress bar ``label``led, none for None),
    its parameters, and its FLOPs on ``dummy_input``."""
    return Measurement(
        perplexity=sharded_perplexity(model, batches, label),
        params=count_params(model),
        flops=count_flops(model, dummy_input)[0],
    )


def mean_loss(model: torch.nn.Module, batches: Sequence[torch.Tensor]) -> float:
    """Mean loss over ``batches``, each rank of a data-parallel run evaluating its share."""
    with torch.no_grad():
        total = sum(next_token_loss(model, b).item() for b in distributed.shard(batches))
    total, count = distributed.sum_over_ranks([total, len(distributed.shard(batches))])
    return total / count


def sharded_perplexity(
    model: torch.nn.Module, batches: Sequence[torch.Tensor], label: str | None
) -> float:
    """``nasframe.app.lm.perplexity``, each rank of a data-parallel run evaluating its share."""
    mine = distributed.shard(batches)
    if not distributed.is_active():
        return perplexity(model, batches, label)
    loss, tokens = 0.0, 0
    if mine:
        tokens = sum(batch[:, 1:].numel() for batch in mine)
        loss = math.log(perplexity(model, mine, label)) * tokens
    loss, tokens = distributed.sum_over_ranks([loss, tokens])
    return math.exp(loss / tokens)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def progress_bar(label: str | None) -> Callable[..., Any]:
    """A progress bar labelled ``label`` (none when ``label`` is None)."""

    def bar(iterable: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("desc", label)  # the caller's own label wins
        return tqdm(iterable, disable=label is None, leave=False, **kwargs)

    return bar
