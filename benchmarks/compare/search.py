"""The nasframe methods: gradnas (per layer and uniform), fastnas and the random floor, each a
search of the same converted model to a parameter budget with the main job's defaults (its
allocation settings and reconstruction, read at run time), then export and evaluation."""

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
from nasframe.app.job_settings import JOB_SEARCH_DEFAULTS, JobSettings
from nasframe.app.lm import next_token_loss
from nasframe.searchers.allocation import uniform_groups
from nasframe.searchers.base import SearchResult
from nasframe.searchers.binary import BinarySearcher
from nasframe.searchers.config import BinarySearchConfig
from nasframe.space.search_space import SearchSpace

from .data import Data, count_params, evaluate
from .settings import (
    FASTNAS,
    GRADNAS,
    GRADNAS_UNIFORM,
    RANDOM,
    RANDOM_SEED,
    SEARCHES,
    Settings,
    search_rules,
)


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
        # The main job's allocation settings (read now, so a change of defaults is measured);
        # the variants (variants.py) vary them.
        **job_search_defaults(),
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


def job_search_defaults() -> dict[str, Any]:
    """The allocation settings ``nasframe search`` uses when no flag is given."""
    return dict(JOB_SEARCH_DEFAULTS)


def job_reconstruction() -> str:
    """The reconstruction ``nasframe search`` uses when no flag is given."""
    return JobSettings().reconstruct


def job_repair_options() -> dict[str, Any]:
    """The job's other repair settings ``nasframe.reconstruct`` takes (its ``ridge``, where
    the job has one), so the rows repair as ``nasframe search`` does."""
    settings = JobSettings()
    return {"ridge": settings.ridge} if hasattr(settings, "ridge") else {}


def run_search(
    space: SearchSpace, method: str, budget: int, config: Mapping[str, Any]
) -> SearchResult:
    """Search ``space`` to ``budget``% of its parameters; random is not a registered plugin."""
    constraint = budget if isinstance(budget, str) else f"params={budget}%"
    if method == RANDOM:
        return RandomBinarySearcher().search(space, constraint, config=config)
    return nasframe.search(space, constraint, algorithm=method, config=config)[1]


@dataclass
class Run:
    """One method at one budget: what the pruned model scores and what the search cost."""

    method: str
    budget: int
    perplexity: float  # on the legacy docstrings@128 batches (the targets' figure)
    params: int
    fraction: float
    ratio_to_dense: float
    search_s: float | None
    resumed: bool | None = None
    phases_s: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    #: Every evaluation of :func:`compare.data.evaluate`, by text@length.
    perplexities: dict[str, float] = field(default_factory=dict)
    #: Process CPU time of the search (time.process_time; torch runs one thread).
    cpu_s: float | None = None
    #: Which variant of the method (Torch-Pruning: its importance); "" for one-variant methods.
    variant: str = ""
    #: What the pruned model kept (widths, heads) and how it was repaired.
    pruned: dict[str, Any] = field(default_factory=dict)


def make_run(
    method: str,
    budget: int,
    model: nn.Module,
    data: Data,
    dense: Mapping[str, Any],
    search_s: float | None,
    cpu_s: float | None,
    **fields: Any,
) -> Run:
    """Evaluate ``model`` (pruned) and record it against the dense figures."""
    figures = evaluate(model, data)
    params = count_params(model)
    ppl = figures[data.legacy]
    return Run(
        method=method,
        budget=budget,
        perplexity=ppl,
        params=params,
        fraction=params / dense["params"],
        ratio_to_dense=ppl / dense["perplexity"],
        search_s=search_s,
        cpu_s=cpu_s,
        perplexities=figures,
        **fields,
    )


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
    dense: Mapping[str, Any],
    settings: Settings,
    checkpoint: Path | None,
    statistics: dict[str, Any] | None = None,
) -> tuple[Run, dict[str, Any]]:
    """Prune a copy of ``model`` as ``nasframe search --algo ALGO [--uniform]`` does with its
    defaults: search the budget lowered by the bias reserve, repair with the job's
    reconstruction on the calibration batches, export, evaluate.

    The copy matters: converting and searching sort the weights in place. The search is timed
    (wall and process CPU), apart from reconstruction; ``statistics`` is reused across one
    method's budgets (same unit order, same batches).
    """
    algorithm, uniform = SEARCHES[method], method == GRADNAS_UNIFORM
    candidate = copy.deepcopy(model)
    space = nasframe.convert(candidate, search_rules(settings.divisor))
    summary = space_summary(space)
    config = search_config(algorithm, data, checkpoint, settings.progress)
    if uniform:
        config["uniform"] = True
    mode = job_reconstruction()
    can_add_bias = data.plain_biases if uniform else None
    reserve = nasframe.bias_reserve(space, can_add_bias) if mode != "none" else 0
    constraint = f"params={budget * dense['params'] / 100 - reserve}"
    wall, cpu = time.perf_counter(), time.process_time()
    result = run_search(space, algorithm, constraint, config)
    search_s, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    start = time.perf_counter()
    repaired = nasframe.reconstruct(
        space,
        list(data.calibration),
        next_token_loss,
        mode,
        statistics=statistics,
        can_add_bias=can_add_bias,
        **job_repair_options(),
    )
    reconstruct_s = time.perf_counter() - start
    pruned = nasframe.export(space, inplace=True).eval()
    run = make_run(
        method,
        budget,
        pruned,
        data,
        dense,
        search_s,
        cpu_s,
        resumed=result.resumed,
        phases_s=dict(result.timings) | {"reconstruct": reconstruct_s},
        info={
            "config": result.config,
            "limit": result.limit,
            "bias_reserve": reserve,
            "cost_after": result.cost_after,
            "compute_s": result.compute_s,
            "search_config": {k: v for k, v in config.items() if isinstance(v, str | int | float)},
        },
        pruned={
            "reconstruct": mode,
            "repaired": len(repaired.reconstructed),
            **job_repair_options(),
        },
    )
    return run, summary
