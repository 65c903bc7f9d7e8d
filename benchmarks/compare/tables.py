"""The rows of the report: every method at every budget on every report text, the search
speed of gradnas against fastnas, and what each peer pruned. Pure functions of the results
dict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .settings import FASTNAS, FLAP, GRADNAS, GRADNAS_UNIFORM, METHODS, TORCH_PRUNING

VARIANT_ORDER = {"": 0, "taylor": 1, "hessian": 2}
LABELS = {
    GRADNAS: "gradnas",
    GRADNAS_UNIFORM: "gradnas --uniform",
    FASTNAS: "fastnas (L1, job defaults)",
    FLAP: "FLAP-style",
    TORCH_PRUNING: "Torch-Pruning",
}


def method_label(method: str, variant: str = "") -> str:
    label = LABELS.get(method, method)
    return f"{label} ({variant.capitalize()})" if variant else label


def run_label(run: Mapping[str, Any]) -> str:
    return method_label(run["method"], run.get("variant") or "")


def figure_names(results: Mapping[str, Any]) -> list[str]:
    """The evaluations every row has, in the dense model's order."""
    dense = results["dense"]
    return list(dense.get("perplexities") or {"docstrings@128": dense["perplexity"]})


def _figure(run: Mapping[str, Any], dense: Mapping[str, Any], name: str) -> str:
    figures = run.get("perplexities") or {"docstrings@128": run["perplexity"]}
    dense_figures = dense.get("perplexities") or {"docstrings@128": dense["perplexity"]}
    if name not in figures:
        return "-"
    return f"{number(figures[name])} ({number(figures[name] / dense_figures[name])}x)"


def number(value: float) -> str:
    """Two decimals, or three significant digits for the random floor's huge figures."""
    return f"{value:.2f}" if abs(value) < 1e5 else f"{value:.3g}"


def sorted_runs(results: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    def key(run: Mapping[str, Any]) -> tuple[Any, ...]:
        variant = run.get("variant") or ""
        return (-run["budget"], METHODS.index(run["method"]), VARIANT_ORDER.get(variant, 9))

    return sorted(results["runs"], key=key)


def results_table(results: Mapping[str, Any]) -> list[str]:
    dense = results["dense"]
    names = figure_names(results)
    lines = [
        "Perplexity after pruning, no finetuning (lower is better; x dense in brackets):",
        "",
        "| method | budget | " + " | ".join(names) + " | kept params | search wall / CPU |",
        "| --- | --- |" + " --- |" * len(names) + " --- | --- |",
        "| dense | 100% | "
        + " | ".join(_figure(dense, dense, n) for n in names)
        + f" | {dense['params']:,} (100.0%) | - |",
    ]
    for run in sorted_runs(results):
        lines.append(
            f"| {run_label(run)} | {run['budget']}% | "
            + " | ".join(_figure(run, dense, n) for n in names)
            + f" | {run['params']:,} ({run['fraction']:.1%}) | {search_time(run)} |"
        )
    for method, info in results["methods"].items():
        if info["status"] != "run":
            status = info["status"].replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {method_label(method)} | - | {status} |" + " |" * (len(names) + 1))
    return lines


def search_time(run: Mapping[str, Any]) -> str:
    if run["search_s"] is None:
        return "-"
    if run.get("resumed"):
        return f"{run['search_s']:.1f} s (resumed checkpoint)"
    cpu = run.get("cpu_s")
    return f"{run['search_s']:.1f} s" + ("" if cpu is None else f" / {cpu:.1f} s")


def speed_section(results: Mapping[str, Any]) -> list[str]:
    """gradnas's search against fastnas's at the same budget, measured in the same run."""
    gradnas, fastnas = results["methods"].get(GRADNAS, {}), results["methods"].get(FASTNAS, {})
    if gradnas.get("status") != "run" or fastnas.get("status") != "run":
        return ["Search speed: not measured (gradnas and fastnas were not both run)."]
    lines = [
        f"Search speed at params={gradnas['search_budget']}% (each method's first, fresh "
        "search in this run; wall time and the process's CPU time, `time.process_time`, "
        "with one torch thread):",
        "",
        "| method | wall | CPU |",
        "| --- | --- | --- |",
    ]
    for label, info in (("gradnas", gradnas), ("fastnas", fastnas)):
        cpu = "-" if info.get("cpu_s") is None else f"{info['cpu_s']:.1f} s"
        lines.append(f"| {label} | {info['search_s']:.1f} s | {cpu} |")
    ratio = fastnas["search_s"] / gradnas["search_s"]
    cpu_ratio = (
        fastnas["cpu_s"] / gradnas["cpu_s"]
        if gradnas.get("cpu_s") and fastnas.get("cpu_s")
        else None
    )
    lines.append(
        f"| fastnas / gradnas | {ratio:.1f}x | "
        + ("-" if cpu_ratio is None else f"{cpu_ratio:.1f}x")
        + " |"
    )
    if fastnas.get("search_from_checkpoint") or gradnas.get("search_from_checkpoint"):
        lines += ["", "(A kept checkpoint was resumed: the times are those recorded in it.)"]
    return lines


def _compact(values: Sequence[int]) -> str:
    """``[1536, 1536, 1504]`` -> ``1536 x2, 1504`` (runs of equal values)."""
    parts: list[str] = []
    for value in values:
        if parts and parts[-1].split(" x")[0] == str(value):
            head, _, count = parts[-1].partition(" x")
            parts[-1] = f"{head} x{int(count or 1) + 1}"
        else:
            parts.append(str(value))
    return ", ".join(parts)


def pruned_section(results: Mapping[str, Any]) -> list[str]:
    """What the peers kept, layer by layer (from the pruned weights)."""
    lines = []
    for run in sorted_runs(results):
        kept = run.get("pruned") or {}
        if run["method"] == TORCH_PRUNING and kept:
            lines.append(
                f"- {run_label(run)} at {run['budget']}% (pruning ratio "
                f"{run['info'].get('ratio', 0):.4f}): FFN widths per layer "
                f"{_compact(kept['ffn_widths'])}; query heads {_compact(kept['query_heads'])}, "
                f"KV heads {_compact(kept['kv_heads'])}, hidden size {kept['hidden_size']} "
                "(kept whole)."
            )
        elif run["method"] == FLAP and kept:
            lines.append(
                f"- {run_label(run)} at {run['budget']}%: KV groups per layer "
                f"{_compact(kept['kv_groups_per_layer'])}; FFN widths per layer "
                f"{_compact(kept['ffn_widths'])}; a compensation bias on every pruned "
                "o_proj/down_proj (counted in the params)."
            )
    return (["What the peers pruned:", "", *lines]) if lines else []
