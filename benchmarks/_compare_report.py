"""The report of ``smollm2_compare.py``: targets, the markdown section, the table, the plot.

Pure functions of the results dict the benchmark writes as JSON, so a report can be rendered
again from a saved run (``--from-json``) and tested without the model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nasframe.io.atomic import atomic_write

ALLOCATIONS = ("threshold", "global")
NORMALIZATIONS = ("none", "sum", "max")
RECONSTRUCTIONS = ("none", "bias", "lsq")

MARK_START = "<!-- smollm2-compare:start -->"
MARK_END = "<!-- smollm2-compare:end -->"

GRADNAS, FASTNAS, RANDOM, TORCH_PRUNING = "gradnas", "fastnas", "random", "torch-pruning"
METHODS = (GRADNAS, FASTNAS, RANDOM, TORCH_PRUNING)

# The targets of issue 5 (checked, never tuned for: the evaluation text is never looked at).
MAX_RATIO_TO_DENSE_AT_80 = 1.5
MAX_RATIO_TO_FASTNAS = 0.5
MIN_SEARCH_SPEEDUP = 20.0
MAX_SCORING_TIME_RATIO = 1.0


# --------------------------------------------------------------------------- targets


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
        f"{_mb(g_peak)} vs {_mb(p_peak)} ({g_peak / p_peak:.2f}x)"
    )
    return Target(name, met, measured)


def _mb(kb: float) -> str:
    return f"{kb / 1024:,.0f} MiB"


# --------------------------------------------------------------------------- report


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


def method_label(method: str) -> str:
    return {FASTNAS: "fastnas (L1)", TORCH_PRUNING: "Torch-Pruning (Taylor)"}.get(method, method)


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
    lines += _results_table(results)
    if png_link:
        lines += ["", f"![perplexity against kept parameters]({png_link})"]
    lines += ["", "Targets (issue 5):", "", "| target | result | measured |", "| --- | --- | --- |"]
    for target in check_targets(results):
        verdict = {True: "met", False: "**not met**", None: "not measured"}[target.met]
        lines.append(f"| {target.name} | {verdict} | {target.measured} |")
    variants = variants_section(results)
    lines += [*([""] + variants if variants else [])]
    lines += ["", *_scoring_section(results), "", *_protocol(results), MARK_END]
    return "\n".join(lines)


def _section_head(results: Mapping[str, Any], json_link: str) -> list[str]:
    machine = results["machine"]
    budgets = "/".join(f"{b}%" for b in results["protocol"]["budgets"])
    methods = ", ".join(method_label(m) for m in results["protocol"]["methods"])
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
    ]


def _load(average: Sequence[float] | None) -> str:
    return "unknown" if not average else f"{average[0]:.2f}"


def _results_table(results: Mapping[str, Any]) -> list[str]:
    dense = results["dense"]
    lines = [
        "Perplexity after pruning, no finetuning (lower is better):",
        "",
        "| method | budget | perplexity | x dense | kept params | search time |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| dense | 100% | {dense['perplexity']:.2f} | 1.00x | {dense['params']:,} (100.0%) | - |",
    ]
    for run in sorted(results["runs"], key=lambda r: (-r["budget"], METHODS.index(r["method"]))):
        lines.append(
            f"| {method_label(run['method'])} | {run['budget']}% | {run['perplexity']:.2f} | "
            f"{run['ratio_to_dense']:.2f}x | {run['params']:,} ({run['fraction']:.1%}) | "
            f"{_search_time(run)} |"
        )
    for method, info in results["methods"].items():
        if info["status"] != "run":
            status = info["status"].replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {method_label(method)} | - | {status} | | | |")
    return lines


def _search_time(run: Mapping[str, Any]) -> str:
    if run["search_s"] is None:
        return "-"
    text = f"{run['search_s']:.1f} s"
    phases = run.get("phases_s") or {}
    if run.get("resumed"):
        return f"{text} (resumed checkpoint)"
    if phases:
        parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases.items())
        return f"{text} ({parts})"
    return text


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
    return "-" if kb is None else _mb(kb)


def _protocol(results: Mapping[str, Any]) -> list[str]:
    protocol, space = results["protocol"], results.get("space") or {}
    lines = [
        "Protocol:",
        "",
        f"- Model: {protocol['model']}; {results['dense']['params']:,} parameters (tied "
        "embeddings counted once).",
        f"- Text: `nasframe.app.text.stdlib_corpus()`: {protocol['text']}.",
        f"- Batches of {protocol['batch_size']} x {protocol['seq_len']} tokens: "
        f"{protocol['calibration_batches']} calibration batches "
        f"({protocol['calibration_tokens']:,} predicted tokens), the same for every method; "
        "perplexity on "
        f"{protocol['eval_batches']} evaluation batches ({protocol['eval_tokens']:,} tokens).",
        f"- Search space: rules `{json.dumps(protocol['rules'])}`"
        + (f"; {_space_text(space)}" if space else "")
        + ".",
        "- gradnas: `Sum((d loss / d mask)^2)` per unit over the calibration batches; the "
        "sensitivity of a size is the score mass of the units it prunes.",
        f"- fastnas: units ranked by the L1 norm of their weights; `score_func` is minus the "
        f"mean next-token loss on {protocol['held_back_batches']} held-back batch(es) of "
        f"{protocol['held_back_batch_size']} x {protocol['seq_len']} tokens "
        f"({protocol['held_back_tokens']:,} tokens) cut from the calibration text right after "
        "the calibration batches — small so that its one evaluation per allowed size of every "
        "hparam fits the run in about an hour; a larger held-back set may rank its choices "
        f"better.{_token_budget(protocol, space)}",
        f"- Validation: {protocol.get('validation_batches', 0)} batches of "
        f"{protocol['batch_size']} x {protocol['seq_len']} tokens "
        f"({protocol.get('validation_tokens', 0):,} tokens) cut from the calibration text "
        "after the held-back batch, used by neither scoring nor fastnas; the only figure that "
        "chooses a variant. The methods table uses the seed's threshold allocation without "
        "reconstruction; the variants resume the same checkpoints, and a variant that "
        "reconstructs searches its budget lower by `nasframe.bias_reserve` (the parameters "
        "of the biases reconstruction may add), as `nasframe search` does.",
        f"- random: the same threshold search, with seeded random unit scores (seed "
        f"{protocol['random_seed']}; each hparam's scores sum to 1, so the sensitivity of a "
        "size is the random fraction of the hparam it prunes).",
        f"- Torch-Pruning: {_torch_pruning_text(results)}.",
        "- gradnas and fastnas search at the first budget with a checkpoint and resume it at the "
        "others on a fresh copy of the model (importance and sensitivity do not depend on the "
        "budget); the search time reported for them is the first, fresh search's"
        + _kept_checkpoints(results)
        + ".",
        "- No finetuning after pruning. These perplexities are on standard-library docstrings "
        f"at {protocol['seq_len']} tokens: not comparable with figures on other text.",
    ]
    return lines


def _kept_checkpoints(results: Mapping[str, Any]) -> str:
    """Which methods resumed a checkpoint kept from an earlier run (``--checkpoint-dir``)."""
    kept = [m for m, info in results["methods"].items() if info.get("search_from_checkpoint")]
    if not kept:
        return ""
    return (
        f", except {', '.join(kept)}'s: a checkpoint kept from an earlier run of this script "
        "on the same model, batches and search space (`--checkpoint-dir`) was resumed at "
        "every budget, and the time reported is the importance and sensitivity time that "
        "run recorded in it plus this run's allocation"
    )


def _token_budget(protocol: Mapping[str, Any], space: Mapping[str, Any]) -> str:
    """What each search reads: the speedup of gradnas over fastnas follows from it."""
    if not space:
        return ""
    evaluations = space["fastnas_evaluations"]
    return (
        f" Its search runs {evaluations:,} forwards x {protocol['held_back_tokens']:,} tokens "
        f"= {evaluations * protocol['held_back_tokens']:,} tokens; gradnas's runs "
        f"{protocol['calibration_tokens']:,} tokens forward and backward once."
    )


def _space_text(space: Mapping[str, Any]) -> str:
    groups = ", ".join(
        f"{pattern} ({info['count']}x, {info['sizes']} sizes of {info['max']})"
        for pattern, info in space["groups"].items()
    )
    return (
        f"{space['hparams']} hparams: {groups}; fastnas evaluates `score_func` "
        f"{space['fastnas_evaluations']:,} times"
    )


def _torch_pruning_text(results: Mapping[str, Any]) -> str:
    info = results["methods"].get(TORCH_PRUNING)
    if info is None:
        return "not requested"
    if info["status"] != "run":
        return info["status"]
    return (
        "group Taylor importance (|w * dL/dw| summed over the calibration batches), global "
        "ranking of hidden and FFN channels (heads and head dims kept), pruning ratio bisected "
        "to the largest model within the budget; the search time includes the bisection"
    )


def format_table(results: Mapping[str, Any]) -> str:
    """The stdout table: one line per method and budget."""
    dense = results["dense"]
    rows = [("method", "budget", "perplexity", "x dense", "kept params", "search s", "resumed")]
    rows.append(
        ("dense", "100%", f"{dense['perplexity']:.3f}", "1.00", f"{dense['params']:,}", "-", "-")
    )
    for run in results["runs"]:
        rows.append(
            (
                run["method"],
                f"{run['budget']}%",
                f"{run['perplexity']:.3f}",
                f"{run['ratio_to_dense']:.2f}",
                f"{run['params']:,} ({run['fraction']:.1%})",
                "-" if run["search_s"] is None else f"{run['search_s']:.1f}",
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
            f"{run['reconstruct']}: perplexity {run['perplexity']:.3f} "
            f"({run['ratio_to_dense']:.2f}x), validation {run['validation_perplexity']:.3f}"
        )
    for target in [*check_targets(results), check_variant_target(results)]:
        verdict = {True: "met", False: "NOT MET", None: "not measured"}[target.met]
        lines.append(f"{verdict:>12}: {target.name}: {target.measured}")
    return "\n".join(lines)


def _selected_series(results: Mapping[str, Any]) -> tuple[str, list[tuple[float, float]]] | None:
    """gradnas's selected variant at every budget it was measured at, for the plot."""
    variants = results.get("variants")
    if not variants or GRADNAS not in variants["selected"]:
        return None
    chosen = variants["selected"][GRADNAS]
    runs = sorted(
        (
            run
            for run in _variant_runs(variants, GRADNAS)
            if all(run[key] == value for key, value in chosen.items())
        ),
        key=lambda run: run["fraction"],
    )
    label = "gradnas, " + "/".join(chosen[k] for k in ("allocation", "normalize", "reconstruct"))
    return (label, [(r["fraction"], r["perplexity"]) for r in runs]) if runs else None


def plot(results: Mapping[str, Any], path: Path) -> bool:
    """Perplexity against kept parameter fraction, one line per method, log y, dense dashed.

    Returns False (and writes nothing) when matplotlib is not installed.
    """
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for method in METHODS:
        runs = sorted(
            (r for r in results["runs"] if r["method"] == method), key=lambda r: r["fraction"]
        )
        if runs:
            axes.plot(
                [r["fraction"] for r in runs],
                [r["perplexity"] for r in runs],
                marker="o",
                label=method_label(method),
            )
    selected = _selected_series(results)
    if selected:
        label, points = selected
        axes.plot(*zip(*points, strict=True), marker="s", label=label)
    axes.axhline(results["dense"]["perplexity"], linestyle="--", color="gray", label="dense")
    axes.set_yscale("log")
    axes.set_xlabel("kept parameters (fraction of the original)")
    axes.set_ylabel("perplexity (log scale)")
    axes.set_title("SmolLM2-135M-Instruct, pruned without finetuning", fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=120))
    plt.close(figure)
    return True


# --------------------------------------------------------------------------- variants

# The target of issue 6, checked on the selected gradnas variant (never tuned for).
MAX_RATIO_TO_DENSE_AT_80_VARIANT = 1.3


def _variant_runs(variants: Mapping[str, Any], method: str) -> list[Mapping[str, Any]]:
    return [run for run in variants["runs"] if run["method"] == method]


def _cell(run: Mapping[str, Any] | None) -> str:
    if run is None:
        return "-"
    return (
        f"{run['perplexity']:.2f} ({run['ratio_to_dense']:.2f}x; val "
        f"{run['validation_perplexity']:.2f})"
    )


def selected_variant(results: Mapping[str, Any], method: str = GRADNAS) -> Mapping[str, Any] | None:
    """``method``'s selected variant at the grid budget (lowest validation perplexity)."""
    variants = results.get("variants")
    if not variants or method not in variants["selected"]:
        return None
    chosen = variants["selected"][method]
    return next(
        (
            run
            for run in _variant_runs(variants, method)
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
        "Each cell: perplexity on the evaluation text (x dense; perplexity on the validation "
        "batches, which alone choose a variant"
        + (f"; dense validation perplexity {dense_val:.2f}" if dense_val else "")
        + f"). At {budget}% params, no reconstruction:",
        "",
        "| method | "
        + " | ".join(f"{a} / {n}" for a in ALLOCATIONS for n in NORMALIZATIONS)
        + " |",
        "| --- |" + " --- |" * (len(ALLOCATIONS) * len(NORMALIZATIONS)),
    ]
    for method in variants["selected"]:
        runs = {
            (r["allocation"], r["normalize"]): r
            for r in _variant_runs(variants, method)
            if r["budget"] == budget and r["reconstruct"] == "none"
        }
        cells = [_cell(runs.get((a, n))) for a in ALLOCATIONS for n in NORMALIZATIONS]
        lines.append(f"| {method_label(method)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Reconstruction, with each method's allocation / normalisation of lowest validation "
        "perplexity above, on the "
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
            for r in _variant_runs(variants, method)
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
    lines += ["", "Selected (lowest validation perplexity at the grid budget):", ""]
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
