"""``--preset``: a named set of sizes; "thorough" calibrates on four times the model's text.

What a user relies on: the preset scales the model's own default (not a fixed number),
explicit size flags still win, the default preset changes nothing, the summary says which
preset ran, and an unknown name is one line and exit 2 before any model loads.
"""

from __future__ import annotations

import json
from pathlib import Path

from cli_runner import run_main

from nasframe.app.job_settings import FALLBACK_SIZES, JobSettings, with_model_defaults

MODEL_SIZES = {"calibration_batches": 16, "seq_len": 128, "batch_size": 8, "eval_batches": 8}


def test_thorough_scales_the_models_calibration_batches_and_nothing_else() -> None:
    default = with_model_defaults(JobSettings(), MODEL_SIZES)
    thorough = with_model_defaults(JobSettings(preset="thorough"), MODEL_SIZES)
    assert default.calibration_batches == 16 and thorough.calibration_batches == 64
    for key in FALLBACK_SIZES:
        if key != "calibration_batches":
            assert getattr(thorough, key) == getattr(default, key)
    fallback = with_model_defaults(JobSettings(preset="thorough"), {})
    assert fallback.calibration_batches == 4 * FALLBACK_SIZES["calibration_batches"]


def test_an_explicit_size_beats_the_preset() -> None:
    settings = JobSettings(preset="thorough", calibration_batches=5)
    assert with_model_defaults(settings, MODEL_SIZES).calibration_batches == 5


def test_the_summary_names_the_preset_and_the_batches_it_ran(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["search", "--model", "byte-mlp-tiny", "--out", str(out), "--quiet"]
    argv += ["--constraint", "params=85%", "--seq-len", "16", "--eval-batches", "2"]
    code, _, stderr = run_main([*argv, "--preset", "thorough"])
    assert code == 0, stderr[-2000:]
    thorough = json.loads((out / "summary.json").read_text())["settings"]
    code, _, stderr = run_main([*argv, "--out", str(tmp_path / "plain")])
    assert code == 0, stderr[-2000:]
    plain = json.loads((tmp_path / "plain" / "summary.json").read_text())["settings"]
    assert thorough["preset"] == "thorough" and plain["preset"] == "default"
    assert thorough["calibration_batches"] == 4 * plain["calibration_batches"]


def test_an_unknown_preset_is_one_line_and_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, _, stderr = run_main(
        ["search", "--model", "byte-mlp-tiny", "--out", str(out), "--preset", "fast"]
    )
    assert code == 2 and "--preset" in stderr and len(stderr.strip().splitlines()) == 1
    assert not out.exists()
