"""Allocation, score normalisation and reconstruction variants of a nasframe search, measured
on the same model, batches and search checkpoints as ``smollm2_compare.py``'s methods.

Two steps per method (gradnas, fastnas):

1. at the grid budget, every allocation x normalisation, no reconstruction;
2. with the allocation x normalisation of lowest *validation* perplexity, every
   reconstruction mode (at the grid budget; at every budget too when asked).

Choices are made on the validation texts of ``benchmarks/heldout_texts.py`` (the geometric
mean of their perplexities), never on the report texts. Only the selected variant is also
measured on the report texts (``compare.data.evaluate``): that is the figure reported.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

import nasframe
from nasframe.app.lm import next_token_loss

from .data import Data, count_params, evaluate, geometric_mean, validate
from .search import job_repair_options
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
    validation_perplexity: float  # geometric mean over the validation texts
    perplexity: float | None  # the report figures: the selected variant's only
    ratio_to_dense: float | None
    params: int
    fraction: float
    search_s: float
    #: Includes measuring the calibration statistics only for the first run of a method that
    #: needed them (the others reuse them).
    reconstruct_s: float
    config: dict[str, int]
    validation: dict[str, float] = field(default_factory=dict)
    perplexities: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class VariantInputs:
    """What every variant run shares: the dense model, its batches and figures, where each
    method's search checkpoint is, and how the benchmark builds a method's search config."""

    model: nn.Module
    data: Data
    dense: Mapping[str, Any]
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
    report: bool = False,
) -> VariantRun:
    """Prune a fresh copy of the model with one variant and measure it on the validation
    texts, and on the report texts when ``report`` (the search resumes the method's
    checkpoint, so only allocation and reconstruction run)."""
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
        list(inputs.data.calibration),
        next_token_loss,
        reconstruct,
        statistics=inputs.statistics.setdefault(method, {}),
        **job_repair_options(),
    )
    reconstruct_s = time.perf_counter() - start
    pruned = nasframe.export(space, inplace=True).eval()
    validation = validate(pruned, inputs.data)
    figures = evaluate(pruned, inputs.data) if report else {}
    ppl = figures.get(inputs.data.legacy)
    params = count_params(pruned)
    run = VariantRun(
        method=method,
        budget=budget,
        allocation=allocation,
        normalize=normalize,
        reconstruct=reconstruct,
        validation_perplexity=geometric_mean(validation),
        perplexity=ppl,
        ratio_to_dense=None if ppl is None else ppl / inputs.dense["perplexity"],
        params=params,
        fraction=params / inputs.dense["params"],
        search_s=search_s,
        reconstruct_s=reconstruct_s,
        config=dict(result.config),
        validation=validation,
        perplexities=figures,
    )
    inputs.log(
        f"{method} {budget}% {allocation}/{normalize}/{reconstruct}: validation "
        f"{validation}, report {figures}, reconstruct {reconstruct_s:.1f} s"
    )
    return run


def run_variants(
    inputs: VariantInputs,
    methods: Sequence[str],
    budgets: Sequence[int],
    gradnas: str,
    every_budget: bool = True,
) -> dict[str, Any]:
    """Both steps for every method in ``methods`` (those with a nasframe searcher); the
    reconstructions at every budget for gradnas when ``every_budget``, else at the grid
    budget only. Then the selected variant again, measured on the report texts."""
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
        for budget in budgets if method == gradnas and every_budget else [grid_budget]:
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
        selected = run_variant(inputs, method, grid_budget, report=True, **chosen[method])
        first = next(run for run in runs if _same(run, selected))
        selected.reconstruct_s = first.reconstruct_s  # the statistics were measured there
        runs = [run for run in runs if not _same(run, selected)] + [selected]
    return {
        "grid_budget": grid_budget,
        "runs": [asdict(run) for run in runs],
        "selected": chosen,
        "selection": "lowest geometric mean of the validation texts' perplexities at the grid "
        "budget",
        "dense_validation": dict(inputs.dense.get("validation") or {}),
        "dense_validation_perplexity": geometric_mean(inputs.dense.get("validation") or {}),
    }


def _same(run: VariantRun, other: VariantRun) -> bool:
    keys = ("method", "budget", "allocation", "normalize", "reconstruct")
    return all(getattr(run, key) == getattr(other, key) for key in keys)


def _finite(value: float) -> float:
    return value if math.isfinite(value) else math.inf
