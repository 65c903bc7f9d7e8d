"""The targets of issues 5 and 6, checked on the measured numbers only (never tuned for: the
evaluation text is never looked at). Pure functions of the results dict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .settings import FASTNAS, GRADNAS

# The targets of issue 5 (checked, never tuned for: the evaluation text is never looked at).
MAX_RATIO_TO_DENSE_AT_80 = 1.5
MAX_RATIO_TO_FASTNAS = 0.5
MIN_SEARCH_SPEEDUP = 20.0
MAX_SCORING_TIME_RATIO = 1.0


@dataclass(frozen=True)
class Target:
    """One target of the issue: met (True/False), or None when the run did not measure it."""

    name: str
    met: bool | None
    measured: str


def _run(results: Mapping[str, Any], method: str, budget: int) -> Mapping[str, Any] | None:
    return next(
        (r for r in results["runs"] if r["method"] == method and r["budget"] == budget), None
    )


def check_targets(results: Mapping[str, Any]) -> list[Target]:
    """The four targets of issue 5 part 2, from the measured numbers only."""
    return [
        _target_dense(results),
        _target_vs_fastnas(results),
        _target_speedup(results),
        _target_scoring(results),
    ]


def _target_dense(results: Mapping[str, Any]) -> Target:
    name = f"gradnas perplexity at 80% params <= {MAX_RATIO_TO_DENSE_AT_80}x dense"
    run = _run(results, GRADNAS, 80)
    if run is None:
        return Target(name, None, "not measured (no gradnas run at 80%)")
    ratio = run["ratio_to_dense"]
    measured = (
        f"{ratio:.2f}x ({run['perplexity']:.2f} vs {results['dense']['perplexity']:.2f} dense)"
    )
    return Target(name, ratio <= MAX_RATIO_TO_DENSE_AT_80, measured)


def _target_vs_fastnas(results: Mapping[str, Any]) -> Target:
    name = f"gradnas perplexity <= {MAX_RATIO_TO_FASTNAS}x fastnas's at every budget"
    pairs = []
    for run in results["runs"]:
        other = _run(results, FASTNAS, run["budget"]) if run["method"] == GRADNAS else None
        if other is not None:
            pairs.append((run["budget"], run["perplexity"] / other["perplexity"]))
    if not pairs:
        return Target(name, None, "not measured (gradnas and fastnas were not both run)")
    measured = ", ".join(f"{budget}%: {ratio:.2f}x" for budget, ratio in pairs)
    return Target(name, all(ratio <= MAX_RATIO_TO_FASTNAS for _, ratio in pairs), measured)


def _target_speedup(results: Mapping[str, Any]) -> Target:
    name = f"gradnas search >= {MIN_SEARCH_SPEEDUP:.0f}x faster than fastnas's"
    gradnas = results["methods"].get(GRADNAS, {})
    fastnas = results["methods"].get(FASTNAS, {})
    if gradnas.get("search_s") is None or fastnas.get("search_s") is None:
        return Target(name, None, "not measured (gradnas and fastnas were not both run)")
    speedup = fastnas["search_s"] / gradnas["search_s"]
    measured = (
        f"{speedup:.1f}x ({gradnas['search_s']:.1f} s vs {fastnas['search_s']:.1f} s at "
        f"params={gradnas['search_budget']}%)"
    )
    if gradnas.get("cpu_s") and fastnas.get("cpu_s"):
        measured += (
            f"; CPU time {fastnas['cpu_s'] / gradnas['cpu_s']:.1f}x ({gradnas['cpu_s']:.1f} s "
            f"vs {fastnas['cpu_s']:.1f} s)"
        )
    return Target(name, speedup >= MIN_SEARCH_SPEEDUP, measured)


def _target_scoring(results: Mapping[str, Any]) -> Target:
    name = (
        f"gradnas scoring <= {MAX_SCORING_TIME_RATIO:.1f}x the time of a plain "
        "forward+backward, peak memory no higher"
    )
    scoring = results.get("scoring")
    if not scoring:
        return Target(name, None, "not measured (--scoring-repeats 0)")
    g_peak = scoring["gradnas"]["peak_above_load_kb"]
    p_peak = scoring["plain"]["peak_above_load_kb"]
    if g_peak is None or p_peak is None:
        return Target(name, None, f"time {scoring['time_ratio']:.2f}x; memory not measured")
    met = scoring["time_ratio"] <= MAX_SCORING_TIME_RATIO and g_peak <= p_peak
    measured = (
        f"time {scoring['time_ratio']:.2f}x; peak memory above the loaded model "
        f"{mb(g_peak)} vs {mb(p_peak)} ({g_peak / p_peak:.2f}x)"
    )
    return Target(name, met, measured)


def mb(kb: float) -> str:
    return f"{kb / 1024:,.0f} MiB"


MAX_RATIO_TO_DENSE_AT_80_VARIANT = 1.3


def variant_runs(variants: Mapping[str, Any], method: str) -> list[Mapping[str, Any]]:
    return [run for run in variants["runs"] if run["method"] == method]


def selected_variant(results: Mapping[str, Any], method: str = GRADNAS) -> Mapping[str, Any] | None:
    """``method``'s selected variant at the grid budget (lowest validation perplexity)."""
    variants = results.get("variants")
    if not variants or method not in variants["selected"]:
        return None
    chosen = variants["selected"][method]
    return next(
        (
            run
            for run in variant_runs(variants, method)
            if run["budget"] == variants["grid_budget"]
            and all(run[key] == value for key, value in chosen.items())
        ),
        None,
    )


def check_variant_target(results: Mapping[str, Any]) -> Target:
    name = (
        f"gradnas at 80% params <= {MAX_RATIO_TO_DENSE_AT_80_VARIANT}x dense perplexity, "
        "selected variant, no finetuning"
    )
    run = selected_variant(results)
    if run is None or run["budget"] != 80:
        return Target(name, None, "not measured (no gradnas variants at 80%)")
    label = f"{run['allocation']}/{run['normalize']}/{run['reconstruct']}"
    measured = (
        f"{run['ratio_to_dense']:.2f}x ({run['perplexity']:.2f} vs "
        f"{results['dense']['perplexity']:.2f} dense; {label})"
    )
    return Target(name, run["ratio_to_dense"] <= MAX_RATIO_TO_DENSE_AT_80_VARIANT, measured)
