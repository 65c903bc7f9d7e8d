"""The markdown section of docs/results.md and the stdout table of ``smollm2_compare.py``.

Pure functions of the results dict the benchmark writes as JSON, so a report can be rendered
again from a saved run (``--from-json``) and tested without the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .protocol_text import protocol_section
from .settings import ALLOCATIONS, GRADNAS, NORMALIZATIONS, RECONSTRUCTIONS
from .tables import method_label, pruned_section, results_table, run_label, speed_section
from .targets import check_targets, check_variant_target, mb, selected_variant, variant_runs

MARK_START = "<!-- smollm2-compare:start -->"
MARK_END = "<!-- smollm2-compare:end -->"


def replace_marked_block(text: str, block: str) -> str:
    """``text`` with the part between the smollm2-compare markers (markers included) replaced
    by ``block`` (which carries the markers), or ``block`` appended when there is none."""
    start, end = text.find(MARK_START), text.find(MARK_END)
    if start != -1 and end > start:
        return text[:start] + block + text[end + len(MARK_END) :]
    if start != -1 or end != -1:
        raise ValueError(f"unbalanced {MARK_START} / {MARK_END} markers; fix the file by hand")
    separator = (
        "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
    )
    return text + separator + block + "\n"


def render_markdown(
    results: Mapping[str, Any], png_link: str | None, json_link: str = "results-smollm2.json"
) -> str:
    """The results section, markers included; the links are relative to the markdown file."""
    lines = [MARK_START, *_section_head(results, json_link), ""]
    if results["protocol"].get("quick"):
        lines += [
            "**Smoke run (`--quick`): batches far too small for the numbers to mean anything.**",
            "",
        ]
    lines += results_table(results)
    if png_link:
        lines += ["", f"![perplexity against kept parameters]({png_link})"]
    lines += ["", *speed_section(results)]
    pruned = pruned_section(results)
    lines += ["", *pruned] if pruned else []
    lines += ["", "Targets (issue 5):", "", "| target | result | measured |", "| --- | --- | --- |"]
    for target in check_targets(results):
        verdict = {True: "met", False: "**not met**", None: "not measured"}[target.met]
        lines.append(f"| {target.name} | {verdict} | {target.measured} |")
    variants = variants_section(results)
    lines += [*([""] + variants if variants else [])]
    lines += ["", *_scoring_section(results), "", *protocol_section(results), MARK_END]
    return "\n".join(lines)


def _section_head(results: Mapping[str, Any], json_link: str) -> list[str]:
    machine = results["machine"]
    budgets = "/".join(f"{b}%" for b in results["protocol"]["budgets"])
    methods = ", ".join(method_label(m) for m in results["protocol"]["methods"])
    texts = results["protocol"].get("texts") or {}
    roles = {
        role: ", ".join(f"`{n}` ({t['kind']})" for n, t in texts.items() if t["role"] == role)
        for role in ("report", "validation")
    }
    return [
        f"## SmolLM2-135M-Instruct pruned to {budgets} params: {methods}",
        "",
        f"Command: `{results['command']}` ({results['date']}, one run, "
        f"{results['wall_s'] / 60:.1f} min wall). Raw numbers: "
        f"[{Path(json_link).name}]({json_link}).",
        "",
        f"Machine: {machine['machine']} ({machine['processor']}), {machine['cpus']} CPUs, "
        f"torch {machine['torch']} with {machine['torch_threads']} thread(s), Python "
        f"{machine['python']}, transformers {machine['transformers']}; load average "
        f"{_load(machine['load_average_start'])} at the start and "
        f"{_load(machine['load_average_end'])} at the end (a shared machine: read ratios "
        "measured in this run, not absolute times).",
        *(
            [
                "",
                f"Report texts (the figures): {roles['report']}; validation texts (they only "
                f"choose variants, never reported as the result): {roles['validation']} "
                "(`benchmarks/heldout_texts.py`).",
            ]
            if texts
            else []
        ),
    ]


def _load(average: Sequence[float] | None) -> str:
    return "unknown" if not average else f"{average[0]:.2f}"


def _scoring_section(results: Mapping[str, Any]) -> list[str]:
    scoring = results.get("scoring")
    if not scoring:
        return ["Scoring against a plain forward+backward: not measured (--scoring-repeats 0)."]
    g, p = scoring["gradnas"], scoring["plain"]
    lines = [
        f"gradnas scoring against a plain forward+backward over the same {g['batches']} "
        "calibration batches, each in a fresh process:",
        "",
        "| | time (s, per repeat) | peak memory above the loaded model |",
        "| --- | --- | --- |",
        f"| gradnas scoring (masks attached, weights frozen) | {_seconds(g)} | {_peak(g)} |",
        f"| plain forward+backward (every weight's gradient) | {_seconds(p)} | {_peak(p)} |",
        f"| ratio | {scoring['time_ratio']:.2f}x (median) | "
        + ("-" if scoring["memory_ratio"] is None else f"{scoring['memory_ratio']:.2f}x")
        + " |",
        "",
        "Each child process loads the model, builds the batches (gradnas's also converts the "
        "model and prepares its searcher), then resets the kernel's peak-RSS mark "
        "(`/proc/self/clear_refs`) and reads the RSS; after the repeats it reads the peak "
        "(`VmHWM`, the counter `getrusage(RUSAGE_SELF).ru_maxrss` reports, without the parent's "
        "peak that `ru_maxrss` inherits at exec). The figure is that peak minus the RSS after "
        "loading"
        + (
            ""
            if g.get("peak_reset") and p.get("peak_reset")
            else " (the reset failed: the peak includes loading)"
        )
        + ".",
    ]
    gradnas_search = next((r for r in results["runs"] if r["method"] == GRADNAS), None)
    if gradnas_search and "importance" in (gradnas_search.get("phases_s") or {}):
        lines += [
            "",
            f"In the main process, the first gradnas search's scoring phase took "
            f"{gradnas_search['phases_s']['importance']:.1f} s.",
        ]
    return lines


def _seconds(record: Mapping[str, Any]) -> str:
    return ", ".join(f"{s:.1f}" for s in record["seconds"])


def _peak(record: Mapping[str, Any]) -> str:
    kb = record["peak_above_load_kb"]
    return "-" if kb is None else mb(kb)


def format_table(results: Mapping[str, Any]) -> str:
    """The stdout table: one line per method and budget."""
    dense = results["dense"]
    names = list(dense.get("perplexities") or {})
    rows = [("method", "budget", *names, "kept params", "search s", "cpu s", "resumed")]
    figures = dense.get("perplexities") or {}
    rows.append(("dense", "100%", *(f"{figures[n]:.3f}" for n in names), f"{dense['params']:,}"))
    rows[-1] += ("-", "-", "-")
    for run in results["runs"]:
        figures = run.get("perplexities") or {}
        rows.append(
            (
                run_label(run),
                f"{run['budget']}%",
                *(f"{figures[n]:.3f}" if n in figures else "-" for n in names),
                f"{run['params']:,} ({run['fraction']:.1%})",
                "-" if run["search_s"] is None else f"{run['search_s']:.1f}",
                "-" if run.get("cpu_s") is None else f"{run['cpu_s']:.1f}",
                str(run.get("resumed")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    for run in (results.get("variants") or {}).get("runs", []):
        lines.append(
            f"variant {run['method']} {run['budget']}% {run['allocation']}/{run['normalize']}/"
            f"{run['reconstruct']}: validation {run['validation_perplexity']:.3f}"
            + (f", report {run['perplexities']}" if run.get("perplexities") else "")
        )
    for target in [*check_targets(results), check_variant_target(results)]:
        verdict = {True: "met", False: "NOT MET", None: "not measured"}[target.met]
        lines.append(f"{verdict:>12}: {target.name}: {target.measured}")
    return "\n".join(lines)


def _cell(run: Mapping[str, Any] | None) -> str:
    if run is None:
        return "-"
    validation = f"val {run['validation_perplexity']:.2f}"
    if run.get("perplexity") is None:
        return validation
    figures = run.get("perplexities") or {}
    report = "; ".join(f"{name} {value:.2f}" for name, value in figures.items())
    return f"{validation}; {report or run['perplexity']}"


def variants_section(results: Mapping[str, Any]) -> list[str]:
    """Allocation x normalisation at the grid budget, then reconstruction per budget."""
    variants = results.get("variants")
    if not variants:
        return []
    budget = variants["grid_budget"]
    dense_val = variants.get("dense_validation_perplexity")
    lines = [
        "### Allocation, normalisation and reconstruction",
        "",
        "Each cell: the geometric mean of the validation texts' perplexities (`val`), which "
        "alone chooses a variant"
        + (f" (dense: {dense_val:.2f})" if dense_val else "")
        + "; the report texts are measured for the selected variant only. At "
        + f"{budget}% params, no reconstruction:",
        "",
        "| method | "
        + " | ".join(f"{a} / {n}" for a in ALLOCATIONS for n in NORMALIZATIONS)
        + " |",
        "| --- |" + " --- |" * (len(ALLOCATIONS) * len(NORMALIZATIONS)),
    ]
    for method in variants["selected"]:
        runs = {
            (r["allocation"], r["normalize"]): r
            for r in variant_runs(variants, method)
            if r["budget"] == budget and r["reconstruct"] == "none"
        }
        cells = [_cell(runs.get((a, n))) for a in ALLOCATIONS for n in NORMALIZATIONS]
        lines.append(f"| {method_label(method)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Reconstruction, with each method's allocation / normalisation of lowest validation "
        "figure above, on the "
        f"{results['protocol']['calibration_batches']} calibration batches (lsq runs first at "
        "each budget and "
        "measures the dense statistics of the maps it needs; bias reuses them, so its time is "
        "the update alone):",
        "",
        "| method | allocation / normalisation | budget | "
        + " | ".join(RECONSTRUCTIONS)
        + " | reconstruction time (bias, lsq) |",
        "| --- | --- | --- |" + " --- |" * len(RECONSTRUCTIONS) + " --- |",
    ]
    for method, chosen in variants["selected"].items():
        runs = [
            r
            for r in variant_runs(variants, method)
            if (r["allocation"], r["normalize"]) == (chosen["allocation"], chosen["normalize"])
        ]
        for run_budget in sorted({r["budget"] for r in runs}, reverse=True):
            by_mode = {r["reconstruct"]: r for r in runs if r["budget"] == run_budget}
            times = ", ".join(
                f"{by_mode[m]['reconstruct_s']:.0f} s" for m in ("bias", "lsq") if m in by_mode
            )
            lines.append(
                f"| {method_label(method)} | {chosen['allocation']} / {chosen['normalize']} | "
                f"{run_budget}% | "
                + " | ".join(_cell(by_mode.get(m)) for m in RECONSTRUCTIONS)
                + f" | {times or '-'} |"
            )
    lines += ["", "Selected (lowest validation figure at the grid budget):", ""]
    for method, chosen in variants["selected"].items():
        run = selected_variant(results, method)
        lines.append(
            f"- {method_label(method)}: `--allocation {chosen['allocation']} --normalize "
            f"{chosen['normalize']} --reconstruct {chosen['reconstruct']}`: "
            f"{_cell(run)} at {budget}%."
        )
    target = check_variant_target(results)
    verdict = {True: "met", False: "**not met**", None: "not measured"}[target.met]
    lines += ["", f"Target (issue 6): {target.name}: {verdict}, {target.measured}."]
    return lines
