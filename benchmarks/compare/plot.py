"""docs/results.png: perplexity against kept parameters, one line per method (matplotlib,
only when it is installed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nasframe.io.atomic import atomic_write

from .settings import GRADNAS, RANDOM
from .tables import run_label
from .targets import variant_runs


def _selected_series(results: Mapping[str, Any]) -> tuple[str, list[tuple[float, float]]] | None:
    """gradnas's selected variant at every budget it was measured at, for the plot."""
    variants = results.get("variants")
    if not variants or GRADNAS not in variants["selected"]:
        return None
    chosen = variants["selected"][GRADNAS]
    runs = sorted(
        (
            run
            for run in variant_runs(variants, GRADNAS)
            if all(run[key] == value for key, value in chosen.items())
        ),
        key=lambda run: run["fraction"],
    )
    label = "gradnas, " + "/".join(chosen[k] for k in ("allocation", "normalize", "reconstruct"))
    points = [(r["fraction"], r["perplexity"]) for r in runs if r.get("perplexity") is not None]
    return (label, points) if points else None


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
    # The random floor can be many orders of magnitude above the rest: the axis stops at
    # ten times the worst other row, and what lies above it is named in the legend.
    others = [r["perplexity"] for r in results["runs"] if r["method"] != RANDOM]
    top = 10 * max(others) if others else None
    for label in dict.fromkeys(run_label(r) for r in results["runs"]):
        runs = sorted(
            (r for r in results["runs"] if run_label(r) == label), key=lambda r: r["fraction"]
        )
        shown = [r for r in runs if top is None or r["perplexity"] <= top]
        hidden = len(runs) - len(shown)
        axes.plot(
            [r["fraction"] for r in shown],
            [r["perplexity"] for r in shown],
            marker="o",
            label=label + (f" ({hidden} above the axis)" if hidden else ""),
        )
    selected = _selected_series(results)
    if selected:
        label, points = selected
        axes.plot(*zip(*points, strict=True), marker="s", label=label)
    axes.axhline(results["dense"]["perplexity"], linestyle="--", color="gray", label="dense")
    axes.set_yscale("log")
    if top is not None:
        axes.set_ylim(top=top)
    axes.set_xlabel("kept parameters (fraction of the original)")
    axes.set_ylabel("perplexity, docstrings at 128 tokens (log scale)")
    axes.set_title("SmolLM2-135M-Instruct, pruned without finetuning", fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=120))
    plt.close(figure)
    return True
