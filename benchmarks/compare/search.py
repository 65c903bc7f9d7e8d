"""The nasframe methods: gradnas, fastnas and the random floor, each a search of the same
converted model to a parameter budget, then export and perplexity."""

from __future__ import annotations

import copy
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from gradnas.searcher import GradientBinarySearcher
from torch import nn

import nasframe
from nasframe.app.lm import next_token_loss, perplexity
from nasframe.searchers.allocation import uniform_groups
from nasframe.searchers.base import SearchResult
from nasframe.searchers.binary import BinarySearcher
from nasframe.searchers.config import BinarySearchConfig
from nasframe.space.search_space import SearchSpace

from .data import Data, count_params
from .settings import FASTNAS, GRADNAS, RANDOM, RANDOM_SEED, Settings, search_rules


@dataclass(frozen=True)
class RandomSearchConfig(BinarySearchConfig):
    """The shared binary search's keys, plus the seed of the random unit scores."""

    seed: int = RANDOM_SEED


class RandomBinarySearcher(BinarySearcher):
    """The shared threshold search with a random ranking: the floor any method must beat.

    Each unit gets a seeded uniform random score, divided by its hparam's total so every
    hparam's scores sum to 1. The sensitivity of a size is gradnas's: the score mass of the
    units it prunes, here the (random) fraction of the hparam removed. Without the
    normalisation a threshold would prune the same *number* of units everywhere, which takes
    all but one of the 30 layers before an FFN loses a tenth of its 1536 neurons. The seed of an
    hparam is derived from its name, so the draw does not depend on the order of hparams.
    """

    name = RANDOM
    uses_score_func = False
    config_type = RandomSearchConfig

    @property
    def score_func(self) -> Callable[[nn.Module], float]:
        return GradientBinarySearcher.gradnas_score_func

    def compute_importance(self, names: list[str]) -> dict[str, torch.Tensor]:
        scores = {}
        for name in names:
            generator = torch.Generator().manual_seed(
                int(self.settings.seed) * 1_000_003 + zlib.crc32(name.encode())
            )
            draw = torch.rand(self.space.hparams[name].max, generator=generator)
            scores[name] = draw / draw.sum()
        self.importance_info = {"seed": int(self.settings.seed)}
        return scores


def held_back_score(batches: Sequence[torch.Tensor]) -> Callable[[nn.Module], float]:
    """fastnas's score_func: minus the mean next-token loss on the held-back batches."""

    def score(model: nn.Module) -> float:
        with torch.no_grad():
            return -sum(next_token_loss(model, b).item() for b in batches) / len(batches)

    return score


def search_config(
    method: str, data: Data, checkpoint: Path | None, progress: bool
) -> dict[str, Any]:
    """The search config of ``method``: gradnas scores on the calibration batches, fastnas
    measures each choice on the held-back batches, random needs only its seed."""
    config: dict[str, Any] = {
        "verbose": progress,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        # The methods table compares scores under the seed's allocation; the variants
        # (variants.py) vary it.
        "allocation": "threshold",
        "normalize": "none",
    }
    if method == GRADNAS:
        config |= {
            "data_loader": data.calibration,
            "loss_func": next_token_loss,
            "max_iter_data_loader": len(data.calibration),
        }
    elif method == FASTNAS:
        config["score_func"] = held_back_score(data.held_back)
    elif method == RANDOM:
        config["seed"] = RANDOM_SEED
    else:
        raise ValueError(f"{method} is not a nasframe search method")
    return config


def run_search(
    space: SearchSpace, method: str, budget: int, config: Mapping[str, Any]
) -> SearchResult:
    """Search ``space`` to ``budget``% of its parameters; random is not a registered plugin."""
    constraint = f"params={budget}%"
    if method == RANDOM:
        return RandomBinarySearcher().search(space, constraint, config=config)
    return nasframe.search(space, constraint, algorithm=method, config=config)[1]


@dataclass
class Run:
    """One method at one budget: what the pruned model scores and what the search cost."""

    method: str
    budget: int
    perplexity: float
    params: int
    fraction: float
    ratio_to_dense: float
    search_s: float | None
    resumed: bool | None = None
    phases_s: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def space_summary(space: SearchSpace) -> dict[str, Any]:
    """Hparam groups and their sizes, and how many evaluations fastnas's sensitivity costs."""
    groups = uniform_groups(list(space.hparams))
    return {
        "groups": {
            pattern: {
                "count": len(members),
                "max": space.hparams[members[0]].max,
                "sizes": len(space.hparams[members[0]].choices),
            }
            for pattern, members in groups.items()
        },
        "hparams": len(space.hparams),
        "smaller_sizes": sum(len(hp.choices) - 1 for hp in space.hparams.values()),
        # compute_sensitivity also scores the full size once per hparam
        "fastnas_evaluations": sum(len(hp.choices) for hp in space.hparams.values()),
    }


def prune_with_search(
    model: nn.Module,
    method: str,
    budget: int,
    data: Data,
    dense: Mapping[str, float],
    settings: Settings,
    checkpoint: Path | None,
) -> tuple[Run, dict[str, Any]]:
    """Prune a copy of ``model`` with a nasframe search and measure the pruned model.

    The copy matters: converting and searching sort the weights in place. Only the search is
    timed (not the copy, conversion, export or evaluation).
    """
    candidate = copy.deepcopy(model)
    space = nasframe.convert(candidate, search_rules(settings.divisor))
    summary = space_summary(space)
    config = search_config(method, data, checkpoint, settings.progress)
    start = time.perf_counter()
    result = run_search(space, method, budget, config)
    search_s = time.perf_counter() - start
    pruned = nasframe.export(space, inplace=True).eval()
    ppl = perplexity(pruned, data.evaluation)
    params = count_params(pruned)
    run = Run(
        method=method,
        budget=budget,
        perplexity=ppl,
        params=params,
        fraction=params / dense["params"],
        ratio_to_dense=ppl / dense["perplexity"],
        search_s=search_s,
        resumed=result.resumed,
        phases_s=dict(result.timings),
        info={
            "config": result.config,
            "limit": result.limit,
            "cost_after": result.cost_after,
            "compute_s": result.compute_s,
        },
    )
    return run, summary
