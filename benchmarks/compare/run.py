"""One whole run: every method at every budget, then the variants, in the order that keeps
the measurements meaningful; returns the JSON-able results the report is rendered from."""

from __future__ import annotations

import datetime
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from nasframe.app.lm import perplexity

from .data import Data, count_params, load_model, make_data
from .provenance import load_average, machine_info, protocol_info
from .scoring import measure_scoring
from .search import Run, prune_with_search, search_config
from .settings import CHECKPOINTED, FASTNAS, GRADNAS, TORCH_PRUNING, Settings, search_rules
from .torch_pruning_baseline import prune_with_torch_pruning, torch_pruning_missing
from .variants import VariantInputs, run_variants


def log(message: str) -> None:
    """A progress line on stderr that does not break the progress bars."""
    tqdm.write(message, file=sys.stderr)


def run_benchmark(settings: Settings) -> dict[str, Any]:
    """Everything measured, as the JSON-able dict the report is rendered from."""
    torch.set_num_threads(settings.threads)
    wall_start = time.perf_counter()
    load_before = load_average()
    phases: dict[str, float] = {}

    @contextmanager
    def phase(name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        phases[name] = time.perf_counter() - start

    log(f"command: {settings.command}")
    with phase("scoring_vs_backward"):  # first: see measure_scoring
        scoring = measure_scoring(settings)
    with phase("load_model"):
        bundle = load_model(settings.progress)
    with phase("tokenize"):
        data = make_data(bundle, settings)
    model = bundle.model
    with phase("evaluate_dense"):
        dense = {"perplexity": perplexity(model, data.evaluation), "params": count_params(model)}
    log(f"dense: perplexity {dense['perplexity']:.3f}, {dense['params']:,} params")
    with checkpoint_folder(settings.checkpoint_dir) as folder:
        with phase("methods"):
            runs, methods, space = compare_methods(model, data, dense, settings, folder)
        with phase("variants"):
            variants = compare_variants(model, data, dense, settings, Path(folder))
    return {
        "command": settings.command,
        "date": datetime.date.today().isoformat(),
        "wall_s": time.perf_counter() - wall_start,
        "phases_s": phases,
        "machine": machine_info(settings.threads, load_before, load_average()),
        "protocol": protocol_info(settings, data),
        "space": space,
        "dense": dense,
        "runs": [asdict(run) for run in runs],
        "methods": methods,
        "variants": variants,
        "scoring": scoring,
    }


def compare_methods(
    model: nn.Module, data: Data, dense: Mapping[str, float], settings: Settings, folder: str
) -> tuple[list[Run], dict[str, dict[str, Any]], dict[str, Any]]:
    """Every method at every budget. gradnas and fastnas write a checkpoint at the first
    budget and resume it, on a fresh copy of the model, at the others: their importance and
    sensitivities do not depend on the budget. A budget that fails to resume is an error,
    since the reported search time is the first (fresh) search's."""
    runs: list[Run] = []
    methods: dict[str, dict[str, Any]] = {}
    space: dict[str, Any] = {}
    # fastnas last: it takes most of the run, so any other method's failure shows early
    order = sorted(settings.methods, key=lambda method: method == FASTNAS)
    total = len(order) * len(settings.budgets)
    bar = tqdm(total=total, desc="methods x budgets", disable=not settings.progress)
    for method in order:
        if method == TORCH_PRUNING:
            runs += run_torch_pruning(model, data, dense, settings, methods)
            bar.update(len(settings.budgets))
            continue
        checkpoint = Path(folder) / f"{method}.json" if method in CHECKPOINTED else None
        for index, budget in enumerate(settings.budgets):
            bar.set_postfix_str(f"{method} {budget}%")
            run, space = prune_with_search(model, method, budget, data, dense, settings, checkpoint)
            if checkpoint is not None and index > 0 and not run.resumed:
                raise RuntimeError(f"{method} at {budget}% did not resume its checkpoint")
            runs.append(run)
            bar.update()
            log(
                f"{method} {budget}%: perplexity {run.perplexity:.3f} "
                f"({run.ratio_to_dense:.2f}x dense), {run.params:,} params "
                f"({run.fraction:.1%}), search {run.search_s:.1f} s"
                + (" (resumed)" if run.resumed else "")
            )
        first = next(r for r in runs if r.method == method)
        methods[method] = {
            "status": "run",
            # A kept checkpoint (--checkpoint-dir) is resumed at the first budget too:
            # its importance and sensitivities cost what the runs that wrote it spent.
            "search_s": first.search_s + (first.info["compute_s"] if first.resumed else 0),
            "search_from_checkpoint": bool(first.resumed),
            "search_budget": first.budget,
            "resumed_budgets": [r.budget for r in runs if r.method == method and r.resumed],
        }
    bar.close()
    return runs, methods, space


@contextmanager
def checkpoint_folder(kept: Path | None) -> Iterator[str]:
    """``kept`` (created if missing), or a temp dir removed afterwards."""
    if kept is not None:
        kept.mkdir(parents=True, exist_ok=True)
        yield str(kept)
        return
    with tempfile.TemporaryDirectory(prefix="smollm2-compare-checkpoints-") as folder:
        yield folder


def compare_variants(
    model: nn.Module, data: Data, dense: Mapping[str, float], settings: Settings, folder: Path
) -> dict[str, Any] | None:
    """Allocation x normalisation x reconstruction for gradnas and fastnas (those run), on
    their checkpoints from :func:`compare_methods`; None when neither ran."""
    methods = [m for m in (GRADNAS, FASTNAS) if m in settings.methods]
    if not methods:
        return None
    inputs = VariantInputs(
        model=model,
        calibration=data.calibration,
        validation=data.validation,
        evaluation=data.evaluation,
        dense={**dense, "validation_perplexity": perplexity(model, data.validation)},
        rules=search_rules(settings.divisor),
        checkpoints=folder,
        search_config=lambda method, path: search_config(method, data, path, settings.progress),
        log=log,
    )
    result = run_variants(inputs, methods, settings.budgets, GRADNAS)
    result["dense_validation_perplexity"] = inputs.dense["validation_perplexity"]
    return result


def run_torch_pruning(
    model: nn.Module,
    data: Data,
    dense: Mapping[str, float],
    settings: Settings,
    methods: dict[str, dict[str, Any]],
) -> list[Run]:
    """Torch-Pruning at every budget, or the reason it was not run (recorded in ``methods``).

    A failure is recorded rather than raised: it is a peer's library on a model it may not
    support, and the rest of an hour's run must still be reported.
    """
    missing = torch_pruning_missing()
    if missing:
        methods[TORCH_PRUNING] = {"status": missing}
        log(f"torch-pruning: {missing}")
        return []
    runs = []
    try:
        for budget in settings.budgets:
            runs.append(prune_with_torch_pruning(model, budget, data, dense, settings))
    except Exception as error:  # noqa: BLE001 - reported in the results instead
        methods[TORCH_PRUNING] = {"status": f"failed: {type(error).__name__}: {error}"[:300]}
        log(f"torch-pruning failed: {error}")
        return runs
    methods[TORCH_PRUNING] = {"status": "run", "search_s": runs[0].search_s}
    return runs
