"""Rows measured in other processes of ``benchmarks/smollm2_compare.py`` (fastnas's lane, or
a lane started by hand) are merged into one report, their ratios taken against the main
run's dense figures; the lane's command line keeps the run's sizes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from compare_script import compare

lane = sys.modules["compare.peers.lane"]


def _results(tmp_path: Path) -> dict:
    """A rendered-run results dict with one gradnas row, as run_benchmark returns it."""
    settings = compare.parse_settings(["--quick", "--out-md", str(tmp_path / "r.md")])
    run = {
        "method": "gradnas",
        "budget": 80,
        "perplexity": 30.0,
        "params": 80,
        "fraction": 0.8,
        "ratio_to_dense": 1.5,
        "search_s": 10.0,
        "cpu_s": 9.0,
        "perplexities": {"docstrings@512": 15.0, "docstrings@128": 30.0},
    }
    return {
        "command": settings.command,
        "date": "2026-12-01",
        "wall_s": 60.0,
        "phases_s": {},
        "machine": compare.machine_info(1, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]),
        "protocol": {
            "model": "tiny",
            "text": "t",
            "seq_len": 128,
            "batch_size": 8,
            "calibration_batches": 16,
            "held_back_batches": 1,
            "held_back_batch_size": 2,
            "eval_batches": 8,
            "calibration_tokens": 1,
            "held_back_tokens": 1,
            "eval_tokens": 1,
            "rules": {},
            "budgets": [80],
            "methods": ["gradnas", "fastnas"],
            "random_seed": 0,
            "report_seq_len": 512,
        },
        "space": {},
        "dense": {
            "perplexity": 20.0,
            "params": 100,
            "perplexities": {"docstrings@512": 10.0, "docstrings@128": 20.0},
        },
        "runs": [run],
        "methods": {
            "gradnas": {"status": "run", "search_s": 10.0, "cpu_s": 9.0, "search_budget": 80}
        },
        "variants": None,
        "scoring": None,
    }


def _lane_rows(path: Path) -> Path:
    row = {
        "method": "fastnas",
        "budget": 80,
        "perplexity": 50.0,
        "params": 79,
        "fraction": 0.79,
        "ratio_to_dense": float("nan"),  # the lane measures no dense model
        "search_s": 400.0,
        "cpu_s": 300.0,
        "perplexities": {"docstrings@512": 25.0, "docstrings@128": 50.0},
    }
    status = {"status": "run", "search_s": 400.0, "cpu_s": 300.0, "search_budget": 80}
    path.write_text(json.dumps({"runs": [row], "methods": {"fastnas": status}, "space": {}}))
    return path


def test_lane_rows_are_merged_against_the_main_dense_figures(tmp_path):
    (tmp_path / "main.json").write_text(json.dumps(_results(tmp_path)))
    rows = _lane_rows(tmp_path / "lane.json")
    out = tmp_path / "out" / "results.md"
    compare.main(
        ["--from-json", str(tmp_path / "main.json"), "--merge-lanes", str(rows)]
        + ["--out-md", str(out)]
    )
    merged = json.loads((out.parent / "results-smollm2.json").read_text())
    fastnas = next(r for r in merged["runs"] if r["method"] == "fastnas")
    assert fastnas["ratio_to_dense"] == 2.5 and merged["merged_lanes"] == [str(rows)]
    text = out.read_text()
    assert "| fastnas (L1, job defaults) | 80% | 25.00 (2.50x) | 50.00 (2.50x) |" in text
    assert "| fastnas / gradnas | 40.0x | 33.3x |" in text  # wall and CPU, same run


def test_join_lane_waits_for_the_file_and_fixes_the_ratios(tmp_path):
    rows = lane.join_lane(_lane_rows(tmp_path / "lane.json"), None, {"perplexity": 25.0})
    assert rows["runs"][0]["ratio_to_dense"] == 2.0


def test_the_lane_command_keeps_the_run_sizes(tmp_path):
    settings = compare.parse_settings(["--seq-len", "64", "--report-batches", "3"])
    command = lane.lane_command(settings, ["fastnas"], str(tmp_path), tmp_path / "lane.json")
    child = compare.parse_settings(command[2:])
    assert (child.seq_len, child.report_batches, child.methods) == (64, 3, ("fastnas",))
    assert child.lane == "fastnas" and child.checkpoint_dir == tmp_path
