"""One whole run: every method at every budget, then the variants, in the order that keeps
the measurements meaningful; returns the JSON-able results the report is rendered from."""

from __future__ import annotations

import datetime
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from nasframe.io.atomic import atomic_write_json

from .data import Data, dense_figures, load_model, make_data
from .peers.lane import finish_lane, join_lane, start_lane
from .peers.rows import flap_rows, torch_pruning_rows
from .peers.torch_pruning_runner import ATTENTION_NOTE, torch_pruning_missing
from .provenance import load_average, machine_info, protocol_info
from .scoring import measure_scoring
from .search import Run, prune_with_search, search_config
from .settings import (
    CHECKPOINTED,
    FASTNAS,
    FLAP,
    GRADNAS,
    SEARCHES,
    TORCH_PRUNING,
    Settings,
    search_rules,
)
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
    runs: list[Run] = []
    methods: dict[str, dict[str, Any]] = {}
    found: dict[str, Any] = {"space": {}, "variants": None, "dense": None}

    def results() -> dict[str, Any]:
        return {
            "command": settings.command,
            "date": datetime.date.today().isoformat(),
            "wall_s": time.perf_counter() - wall_start,
            "phases_s": phases,
            "machine": machine_info(settings.threads, load_before, load_average()),
            "protocol": protocol_info(settings, data),
            "space": found["space"],
            "dense": found["dense"],
            "runs": [asdict(run) for run in runs],
            "methods": methods,
            "variants": found["variants"],
            "scoring": scoring,
        }

    with checkpoint_folder(settings.checkpoint_dir) as folder:

        def save_partial(more: list[Run], status: dict[str, Any], space: dict[str, Any]) -> None:
            """Everything so far, renderable with --from-json, in case the rest fails."""
            runs[:] = more
            methods.update(status)
            found["space"] = found["space"] or space
            atomic_write_json(Path(folder) / "partial.json", results())

        joined = settings.join_lane is not None
        laning = (settings.fastnas_lane or joined) and FASTNAS in settings.methods
        laned = [FASTNAS] if laning else []
        lane = start_lane(settings, laned, folder) if laned and not joined else None
        here = replace(settings, methods=tuple(m for m in settings.methods if m not in laned))
        with phase("evaluate_dense"):
            found["dense"] = dense = dense_figures(model, data)
        log(f"dense: {dense['perplexities']}, {dense['params']:,} params")
        with phase("methods"):
            more, status, space = compare_methods(model, data, dense, here, folder, save_partial)
            save_partial(more, status, space)
        with phase("variants"):
            found["variants"] = compare_variants(model, data, dense, here, Path(folder))
            save_partial(runs, {}, {})
        if lane is not None or settings.join_lane is not None:
            with phase("wait_for_fastnas_lane"):
                try:
                    if lane is not None:
                        laned_rows = finish_lane(*lane, dense)
                    else:
                        laned_rows = join_lane(settings.join_lane, settings.join_lane_pid, dense)
                except RuntimeError as error:  # reported, as a peer's failure is
                    log(str(error))
                    laned_rows = {"runs": [], "methods": {FASTNAS: {"status": str(error)[:300]}}}
            runs += [Run(**run) for run in laned_rows["runs"]]
            methods |= laned_rows["methods"]
            found["space"] = found["space"] or laned_rows.get("space") or {}
    return results()


def variants_only(settings: Settings) -> None:
    """Measure the variants of a run whose rows are in ``settings.from_json`` (its dense
    figures, validation ones included) on the checkpoints in ``settings.checkpoint_dir``, and
    write that JSON with the variants to ``settings.lane_out``: for a run whose main
    process was stopped before its variants."""
    import json

    torch.set_num_threads(settings.threads)
    results = json.loads(settings.from_json.read_text(encoding="utf-8"))
    bundle = load_model(settings.progress)
    data = make_data(bundle, settings)
    folder = Path(settings.checkpoint_dir)
    start = time.perf_counter()
    results["variants"] = compare_variants(bundle.model, data, results["dense"], settings, folder)
    results["phases_s"]["variants"] = time.perf_counter() - start
    atomic_write_json(settings.lane_out, results)
    log(f"variants: wrote {settings.lane_out}")


def compare_methods(
    model: nn.Module,
    data: Data,
    dense: Mapping[str, float],
    settings: Settings,
    folder: str,
    on_method: Any = None,
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
    bar = tqdm(total=len(order), desc="methods", disable=not settings.progress)
    for method in order:
        bar.set_postfix_str(method)
        if method == TORCH_PRUNING:
            runs += run_peer(method, torch_pruning_rows, model, data, dense, settings, methods)
        elif method == FLAP:
            runs += run_peer(method, flap_rows, model, data, dense, settings, methods)
        else:
            found, space = search_rows(model, method, data, dense, settings, folder)
            runs += found
            methods[method] = search_summary(method, found)
        if on_method is not None:
            on_method(list(runs), dict(methods), space)
        bar.update()
    bar.close()
    return runs, methods, space


def search_rows(
    model: nn.Module,
    method: str,
    data: Data,
    dense: Mapping[str, Any],
    settings: Settings,
    folder: str,
) -> tuple[list[Run], dict[str, Any]]:
    """One nasframe method at every budget, its reconstruction statistics shared."""
    checkpoint = Path(folder) / f"{method}.json" if method in CHECKPOINTED else None
    statistics: dict[str, Any] = {}
    runs, space = [], {}
    for index, budget in enumerate(settings.budgets):
        run, space = prune_with_search(
            model, method, budget, data, dense, settings, checkpoint, statistics
        )
        if checkpoint is not None and index > 0 and not run.resumed:
            raise RuntimeError(f"{method} at {budget}% did not resume its checkpoint")
        runs.append(run)
        log(
            f"{method} {budget}%: {run.perplexities}, {run.params:,} params "
            f"({run.fraction:.1%}), search {run.search_s:.1f} s (CPU {run.cpu_s:.1f} s)"
            + (" (resumed)" if run.resumed else "")
        )
    return runs, space


def search_summary(method: str, runs: list[Run]) -> dict[str, Any]:
    """The search time of a method: its first (fresh) budget's, wall and CPU."""
    first = runs[0]
    # A kept checkpoint (--checkpoint-dir) is resumed at the first budget too: its
    # importance and sensitivities cost what the runs that wrote it spent.
    earlier = first.info["compute_s"] if first.resumed else 0
    return {
        "status": "run",
        "algorithm": SEARCHES[method],
        "search_s": first.search_s + earlier,
        "cpu_s": None if first.resumed else first.cpu_s,
        "search_from_checkpoint": bool(first.resumed),
        "search_budget": first.budget,
        "resumed_budgets": [r.budget for r in runs if r.resumed],
    }


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
    model: nn.Module, data: Data, dense: Mapping[str, Any], settings: Settings, folder: Path
) -> dict[str, Any] | None:
    """Allocation x normalisation x reconstruction for the methods of
    ``settings.variant_methods`` that ran here, on their checkpoints from
    :func:`compare_methods`; chosen on the validation texts. None when none ran."""
    methods = [m for m in (GRADNAS, FASTNAS) if m in settings.methods]
    methods = [m for m in methods if m in settings.variant_methods]
    if not methods:
        return None
    inputs = VariantInputs(
        model=model,
        data=data,
        dense=dense,
        rules=search_rules(settings.divisor),
        checkpoints=folder,
        search_config=lambda method, path: search_config(method, data, path, settings.progress),
        log=log,
    )
    budgets = settings.budgets if settings.variant_budgets == "all" else None
    return run_variants(inputs, methods, budgets or settings.budgets, GRADNAS, bool(budgets))


def run_peer(
    method: str,
    rows: Any,
    model: nn.Module,
    data: Data,
    dense: Mapping[str, Any],
    settings: Settings,
    methods: dict[str, dict[str, Any]],
) -> list[Run]:
    """A peer's rows at every budget, or the reason it was not run (recorded in ``methods``).

    A failure is recorded rather than raised: it is a peer's code on a model it may not
    support, and the rest of an hour's run must still be reported.
    """
    missing = torch_pruning_missing() if method == TORCH_PRUNING else None
    if missing:
        methods[method] = {"status": missing}
        log(f"{method}: {missing}")
        return []
    try:
        runs = rows(model, data, dense, settings, log)
    except Exception as error:  # noqa: BLE001 - reported in the results instead
        methods[method] = {"status": f"failed: {type(error).__name__}: {error}"[:300]}
        log(f"{method} failed: {error}")
        return []
    methods[method] = {"status": "run", "search_s": runs[0].search_s, "cpu_s": runs[0].cpu_s}
    if method == TORCH_PRUNING:
        methods[method]["note"] = ATTENTION_NOTE
    return runs
