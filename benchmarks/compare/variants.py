"""Allocation, score normalisation and reconstruction variants of a nasframe search, measured
on the same model, batches and search checkpoints as ``smollm2_compare.py``'s methods.

Two steps per method (gradnas, fastnas):

1. at the grid budget, every allocation x normalisation, no reconstruction;
2. with the allocation x normalisation of lowest *validation* perplexity, every
   reconstruction mode (at every budget for gradnas; at the grid budget for fastnas, whose
   searches cost the same but whose runs add little to the comparison).

Choices are made on validation batches (calibration text held back from both scoring and
fastnas's score_func), never on the evaluation text that the tables report.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import nasframe
from nasframe.app.lm import next_token_loss, perplexity

from .settings import ALLOCATIONS, NORMALIZATIONS, RECONSTRUCTIONS

GRID_BUDGET = 80


@dataclass
class VariantRun:
    """One method x budget x (allocation, normalisation, reconstruction)."""

    method: str
    budget: int
    allocation: str
    normalize: str
    reconstruct: str
    validation_perplexity: float
    perplexity: float
    ratio_to_dense: float
    params: int
    fraction: float
    search_s: float
    #: Includes measuring the calibration statistics only for the first run of a method that
    #: needed them (the others reuse them).
    reconstruct_s: float
    config: dict[str, int]


@dataclass(frozen=True)
class VariantInputs:
    """What every variant run shares: the dense model, its batches and figures, where each
    method's search checkpoint is, and how the benchmark builds a method's search config."""

    model: nn.Module
    calibration: Sequence[torch.Tensor]
    validation: Sequence[torch.Tensor]
    evaluation: Sequence[torch.Tensor]
    dense: Mapping[str, float]
    rules: Mapping[str, Any]
    checkpoints: Path
    search_config: Callable[[str, Path], dict[str, Any]]
    log: Callable[[str], None]
    #: Per method: the dense input statistics of every map reconstruction repaired. A
    #: method's searches sort the units alike at every budget, so each map is measured once.
    statistics: dict[str, dict[str, Any]] = field(default_factory=dict)


def run_variant(
    inputs: VariantInputs,
    method: str,
    budget: int,
    allocation: str,
    normalize: str,
    reconstruct: str,
) -> VariantRun:
    """Prune a fresh copy of the model with one variant and measure it (the search resumes
    the method's checkpoint, so only allocation and reconstruction run)."""
    candidate = copy.deepcopy(inputs.model)
    space = nasframe.convert(candidate, dict(inputs.rules))
    config = inputs.search_config(method, inputs.checkpoints / f"{method}.json")
    config |= {"allocation": allocation, "normalize": normalize}
    # As `nasframe search` does: room for the biases reconstruction may add.
    reserve = nasframe.bias_reserve(space) if reconstruct != "none" else 0
    constraint = f"params={budget * inputs.dense['params'] / 100 - reserve}"
    start = time.perf_counter()
    _, result = nasframe.search(space, constraint, algorithm=method, config=config)
    search_s = time.perf_counter() - start
    start = time.perf_counter()
    nasframe.reconstruct(
        space,
        list(inputs.calibration),
        next_token_loss,
        reconstruct,
        statistics=inputs.statistics.setdefault(method, {}),
    )
    reconstruct_s = time.perf_counter() - start
    pruned = nasframe.export(space, inplace=True).eval()
    ppl = perplexity(pruned, inputs.evaluation)
    params = sum(p.numel() for p in pruned.parameters())
    run = VariantRun(
        method=method,
        budget=budget,
        allocation=allocation,
        normalize=normalize,
        reconstruct=reconstruct,
        validation_perplexity=perplexity(pruned, inputs.validation),
        perplexity=ppl,
        ratio_to_dense=ppl / inputs.dense["perplexity"],
        params=params,
        fraction=params / inputs.dense["params"],
        search_s=search_s,
        reconstruct_s=reconstruct_s,
        config=dict(result.config),
    )
    inputs.log(
        f"{method} {budget}% {allocation}/{normalize}/{reconstruct}: perplexity "
        f"{run.perplexity:.3f} ({run.ratio_to_dense:.2f}x), validation "
        f"{run.validation_perplexity:.3f}, reconstruct {reconstruct_s:.1f} s"
    )
    return run


def run_variants(
    inputs: VariantInputs, methods: Sequence[str], budgets: Sequence[int], gradnas: str
) -> dict[str, Any]:
    """Both steps for every method in ``methods`` (those with a nasframe searcher)."""
    grid_budget = GRID_BUDGET if GRID_BUDGET in budgets else budgets[0]
    runs: list[VariantRun] = []
    chosen: dict[str, dict[str, str]] = {}
    for method in methods:
        grid = [
            run_variant(inputs, method, grid_budget, allocation, normalize, "none")
            for allocation in ALLOCATIONS
            for normalize in NORMALIZATIONS
        ]
        runs += grid
        best = min(grid, key=lambda run: _finite(run.validation_perplexity))
        chosen[method] = {"allocation": best.allocation, "normalize": best.normalize}
        for budget in budgets if method == gradnas else [grid_budget]:
            # lsq first: its statistics (with second moments) serve bias too
            for mode in sorted(RECONSTRUCTIONS, key=lambda m: m != "lsq"):
                if budget == grid_budget and mode == "none":
                    continue  # measured in the grid
                runs.append(
                    run_variant(inputs, method, budget, best.allocation, best.normalize, mode)
                )
        at_grid = [
            run
            for run in runs
            if run.method == method
            and run.budget == grid_budget
            and (run.allocation, run.normalize) == (best.allocation, best.normalize)
        ]
        chosen[method]["reconstruct"] = min(
            at_grid, key=lambda run: _finite(run.validation_perplexity)
        ).reconstruct
    return {
        "grid_budget": grid_budget,
        "runs": [asdict(run) for run in runs],
        "selected": chosen,
        "selection": "lowest validation perplexity at the grid budget",
    }


def _finite(value: float) -> float:
    return value if math.isfinite(value) else math.inf
