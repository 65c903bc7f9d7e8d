"""The peers' rows: FLAP and Torch-Pruning at every budget, each pruning a fresh copy of the
same model on the same calibration batches, evaluated by the same function as the nasframe
rows (``compare.data.evaluate``)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from ..data import Data
from ..provenance import package_version
from ..search import Run, make_run
from ..settings import FLAP, TORCH_PRUNING, Settings
from . import flap, torch_pruning_runner


def flap_rows(
    model: nn.Module,
    data: Data,
    dense: Mapping[str, Any],
    settings: Settings,
    log: Callable[[str], None],
) -> list[Run]:
    """FLAP at every budget: the statistics and scores once (they do not depend on the
    budget), then the plan and the pruning of a fresh copy per budget."""
    wall, cpu = time.perf_counter(), time.process_time()
    stats = flap.collect_input_stats(model, data.calibration)
    units = flap.flap_units(model, stats)
    shared_wall, shared_cpu = time.perf_counter() - wall, time.process_time() - cpu
    runs = []
    for budget in settings.budgets:
        candidate = copy.deepcopy(model)
        wall, cpu = time.perf_counter(), time.process_time()
        plan = flap.plan_pruning(candidate, units, budget / 100 * dense["params"])
        kept = flap.apply_plan(candidate, plan, stats)
        search_s = shared_wall + time.perf_counter() - wall
        cpu_s = shared_cpu + time.process_time() - cpu
        torch_pruning_runner.check_forward(candidate, data.calibration[0])
        run = make_run(FLAP, budget, candidate.eval(), data, dense, search_s, cpu_s, pruned=kept)
        if run.params != plan.params_after:
            raise RuntimeError(f"FLAP planned {plan.params_after:,} params, kept {run.params:,}")
        runs.append(run)
        log(f"flap {budget}%: {run.perplexities}, {run.params:,} params ({run.fraction:.1%})")
    return runs


def torch_pruning_rows(
    model: nn.Module,
    data: Data,
    dense: Mapping[str, Any],
    settings: Settings,
    log: Callable[[str], None],
) -> list[Run]:
    """Torch-Pruning's Taylor and Hessian importances at every budget. The per-sequence
    gradients are computed once; their time is added to each importance's first budget."""
    wall, cpu = time.perf_counter(), time.process_time()
    moments = torch_pruning_runner.gradient_moments(copy.deepcopy(model), data.calibration)
    gradient_s, gradient_cpu = time.perf_counter() - wall, time.process_time() - cpu
    log(f"torch-pruning: per-sequence gradients in {gradient_s:.0f} s")
    version = package_version("torch-pruning")
    runs = []
    for kind in torch_pruning_runner.IMPORTANCES:
        for index, budget in enumerate(settings.budgets):
            wall, cpu = time.perf_counter(), time.process_time()
            pruned, info = torch_pruning_runner.prune_all(
                model,
                data.calibration,
                [kind],
                budget / 100 * dense["params"],
                settings.divisor,
                moments,
            )
            search_s = time.perf_counter() - wall + (gradient_s if index == 0 else 0)
            cpu_s = time.process_time() - cpu + (gradient_cpu if index == 0 else 0)
            candidate = pruned[kind].eval()
            run = make_run(
                TORCH_PRUNING,
                budget,
                candidate,
                data,
                dense,
                search_s,
                cpu_s,
                variant=kind,
                info={**info[kind], "version": version, "gradients_s": gradient_s},
                pruned=torch_pruning_runner.describe_pruned(candidate),
            )
            runs.append(run)
            log(
                f"torch-pruning {kind} {budget}%: {run.perplexities}, {run.params:,} params "
                f"({run.fraction:.1%}), ratio {info[kind]['ratio']:.4f}"
            )
    return runs
