"""What the job leaves behind: ``summary.json``, the nasframe save, and the family's format.

:func:`build_summary` is the one place the summary's fields are laid out;
:func:`write_outputs` saves the pruned model (the nasframe format holds any pruned shape),
also in the model family's standard format where it has one (:func:`save_plain`) and as a
GGUF file for llama.cpp (``nasframe.app.exporting.gguf_output``), then the summary, last, so
a summary on disk always describes a complete save.
"""

from __future__ import annotations

import platform
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

import nasframe.distributed as distributed
from nasframe.app.evaluation import Measurement
from nasframe.app.exporting.gguf_output import write_gguf_output
from nasframe.app.job_settings import JOB_SEARCH_DEFAULTS, JobSettings
from nasframe.app.model_registry import ModelBundle
from nasframe.cost.budget import Constraint
from nasframe.errors import InfeasibleConstraintError, UserInputError
from nasframe.io.atomic import atomic_write_directory, atomic_write_json
from nasframe.io.serialization import save
from nasframe.reconstruction.reconstruct import ReconstructionReport
from nasframe.searchers.base import SearchResult
from nasframe.space.search_space import SearchSpace

SUMMARY_FILE = "summary.json"
PLAIN_EXPORT_DIR = "transformers"  # OUT/transformers: the model family's standard format


@dataclass(frozen=True)
class SearchOutcome:
    """What the search phase produced, as the summary reports it."""

    result: SearchResult
    #: The search config the algorithm was given (the job's data filled in).
    config: dict[str, Any]
    #: Parameters held back below a params budget for the biases reconstruction may add.
    reserve: int
    #: How the algorithm computed importance (``importance_info``, e.g. batches used).
    scoring: dict[str, Any]
    calibration_batches: int


def build_summary(
    *,
    settings: JobSettings,
    constraint: Constraint,
    data_source: str,
    eval_batches: int,
    before: Measurement,
    after: Measurement,
    space: SearchSpace,
    outcome: SearchOutcome,
    repaired: ReconstructionReport,
) -> dict[str, Any]:
    """Every figure a user compares before and after, and how they were obtained."""
    result, reserve = outcome.result, outcome.reserve
    return {
        "algorithm": settings.algorithm,
        "model": settings.model,
        "constraint": str(constraint),
        "data": data_source,
        "metric": (
            f"perplexity on the evaluation text: {eval_batches} batches of "
            f"{settings.batch_size} x {settings.seq_len} tokens"
        ),
        "perplexity": {"before": before.perplexity, "after": after.perplexity},
        "params": {
            "before": before.params,
            "after": after.params,
            "fraction": after.params / before.params,
        },
        "flops": {
            "before": before.flops,
            "after": after.flops,
            "fraction": after.flops / before.flops,
            "input": f"one sequence of {settings.seq_len} tokens",
        },
        "hparams": {name: {"kept": hp.active, "max": hp.max} for name, hp in space.hparams.items()},
        "search": {
            # the budget asked for; the search aimed at searched_limit, bias_reserve below it
            "limit": result.limit + reserve,
            "searched_limit": result.limit,
            "bias_reserve": reserve,
            "cost_after": result.cost_after,
            "resumed_from_checkpoint": result.resumed,
            "calibration_batches": outcome.calibration_batches,
            "scoring": outcome.scoring,
            "timings_s": result.timings,
            **{key: outcome.config[key] for key in JOB_SEARCH_DEFAULTS if key in outcome.config},
        },
        "reconstruct": {
            "mode": settings.reconstruct,
            **reconstruction_used(settings, repaired),
            "reconstructed": list(repaired.reconstructed),
            "readers": list(repaired.readers),  # of a pruned hidden size, also in reconstructed
            "skipped": dict(repaired.skipped),
            "added_biases": dict(repaired.added_biases),
            "batches": repaired.batches,
        },
        "settings": asdict(settings),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "machine": platform.machine(),
            "threads": torch.get_num_threads(),
            "ranks": distributed.world_size(),
        },
    }


def reconstruction_used(settings: JobSettings, repaired: ReconstructionReport) -> dict[str, Any]:
    """The reconstruction actually run (``mode_used``), the maps refitted without a bias
    (``without_bias``) and why (``mode_reason``; None when it is the mode asked for)."""
    mode, without = settings.reconstruct, list(repaired.without_bias)
    if not without:
        return {"mode_used": mode, "mode_reason": None, "without_bias": without}
    share = "" if len(without) == len(repaired.reconstructed) else f" for {len(without)} maps"
    return {
        "mode_used": f"{mode} without added biases{share}",
        "mode_reason": (
            "--uniform writes a plain transformers directory, and its config cannot hold a "
            f"bias on {', '.join(without)}; their kept columns were refitted without one "
            "(least squares without a bias term), so no bias was added there"
        ),
        "without_bias": without,
    }


def reserve_error(
    error: InfeasibleConstraintError,
    constraint: Constraint,
    params_before: int,
    reserve: int,
    smallest: float,
    mode: str,
) -> InfeasibleConstraintError:
    """The error of a search whose limit the bias reserve lowered, told in the user's terms:
    the constraint they wrote, how much was held back and why (the search itself only saw
    the lowered absolute limit, which the user never wrote)."""
    limit = constraint.limit(params_before)
    why = (
        f"--reconstruct {mode} may give the maps it repairs up to {reserve:,} bias "
        f"parameters, so the search keeps {reserve:,} params in reserve"
    )
    if smallest + reserve > limit:
        least = smallest + reserve
        # Without the reserve the search would fit: the user may also drop reconstruction.
        alternative = ", or pass --reconstruct none" if smallest <= limit else ""
        return InfeasibleConstraintError(
            f"constraint {constraint} asks for {limit:,.0f} params, but {why} and the smallest "
            f"reachable sub-network ({smallest:,.0f}) plus that reserve is {least:,.0f} "
            f"({100 * least / params_before:.1f}% of {params_before:,}); relax the constraint "
            f"to at least that{alternative}."
        )
    return InfeasibleConstraintError(
        f"for constraint {constraint} ({limit:,.0f} params) {why}, which lowers the search's "
        f"limit to {limit - reserve:,.0f}: {error}"
    )


def save_model(
    bundle: ModelBundle,
    pruned: torch.nn.Module,
    space: SearchSpace,
    config: dict[str, int],
    out: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Save ``pruned`` in the nasframe format, and the family's and llama.cpp's (GGUF) where
    they can hold it; returns the summary's ``exports`` entry."""
    save(
        pruned,
        out,
        config,
        bundle.architecture,
        extra={"summary": SUMMARY_FILE},
        kept_units=space.kept_units(),
        added_biases=space.added_biases,
    )
    exports = save_plain(bundle, pruned, out, log)
    return exports | write_gguf_output(bundle.save_gguf, pruned, out, log)


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    atomic_write_json(out / SUMMARY_FILE, summary)


def save_plain(
    bundle: ModelBundle, pruned: torch.nn.Module, out: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    """Also write the model family's standard format to ``OUT/transformers`` when it has one.

    The nasframe format holds any pruned shape; the family's format (a transformers directory
    that ``from_pretrained`` loads without nasframe) holds only shapes its config can express,
    such as the same FFN width in every layer. When it cannot, the job still succeeds and says
    why; a directory left from an earlier run is removed so it never contradicts this one.
    """
    exports: dict[str, Any] = {"nasframe": str(out), PLAIN_EXPORT_DIR: None, "note": None}
    if bundle.save_plain is None:
        return exports
    target = out / PLAIN_EXPORT_DIR
    try:
        atomic_write_directory(target, lambda directory: bundle.save_plain(pruned, directory))
    except UserInputError as error:
        shutil.rmtree(target, ignore_errors=True)
        reason = str(error)
        exports["note"] = (
            f"no plain transformers directory was written to {out} (load the result with "
            f"nasframe.load): plain transformers cannot hold this model: {reason}"
        )
        exports["reason"] = reason
        log(exports["note"])
        return exports
    exports[PLAIN_EXPORT_DIR] = str(target)
    return exports


def print_summary(summary: dict[str, Any], out: object) -> None:
    """The few lines ``nasframe search`` prints when it is done (the rest is summary.json)."""
    ppl, params, flops = summary["perplexity"], summary["params"], summary["flops"]
    print(f"{summary['algorithm']} on {summary['model']} at {summary['constraint']}")
    print(f"  perplexity  {ppl['before']:>14.3f} -> {ppl['after']:.3f}")
    print(
        f"  params      {params['before']:>14,} -> {params['after']:,} ({params['fraction']:.1%})"
    )
    print(f"  FLOPs       {flops['before']:>14,} -> {flops['after']:,} ({flops['fraction']:.1%})")
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in summary["timings_s"].items())
    print(f"  time        {timings}")
    print(f"  saved to    {out}")
    plain = summary.get("exports", {}).get("transformers")
    if plain:
        print(f"  also as     {plain} (plain transformers)")
    gguf = summary.get("exports", {}).get("gguf")
    if gguf:
        print(f"  also as     {gguf} (llama.cpp)")
