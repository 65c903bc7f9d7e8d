"""End-to-end ``nasframe search`` on ``byte-mlp-tiny``: the summary, the constraint, the kept
sizes, the saved model, the flags, progress output and the ``python -m nasframe`` entry point.

The fastnas run is a real subprocess; the gradnas run is in-process (see conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_runner import run_main
from cli_support import (
    CALIBRATION,
    OUTPUT_FILES,
    evaluation_batches,
    read_summary,
    search_argv,
)

import nasframe
import nasframe.app.job
from nasframe.app.lm import perplexity
from nasframe.io.serialization import read_metadata


def test_search_writes_a_summary_with_every_documented_figure(finished_run: dict) -> None:
    out = finished_run["out"]
    assert {p.name for p in out.iterdir()} >= OUTPUT_FILES
    summary = read_summary(out)
    algorithm = finished_run["argv"][finished_run["argv"].index("--algo") + 1]
    assert summary["algorithm"] == algorithm
    assert summary["model"] == "byte-mlp-tiny"
    assert summary["constraint"] == f"params={round(finished_run['limit'] * 100)}%"
    for kind in ("params", "flops"):
        before, after = summary[kind]["before"], summary[kind]["after"]
        assert 0 < after <= before
        assert summary[kind]["fraction"] == pytest.approx(after / before)
    for when in ("before", "after"):
        assert 1.0 < summary["perplexity"][when] < 1e6
    assert summary["hparams"], "the summary lists no hparam"
    assert summary["search"]["resumed_from_checkpoint"] is False
    assert summary["search"]["cost_after"] == summary["params"]["after"]
    phases = summary["timings_s"]
    assert {"load_model", "search", "evaluate_before", "evaluate_after", "save"} <= set(phases)
    assert all(seconds >= 0 for seconds in phases.values())
    assert "saved to" in finished_run["stdout"]


def test_search_meets_the_constraint(finished_run: dict) -> None:
    summary = read_summary(finished_run["out"])
    assert summary["params"]["fraction"] <= finished_run["limit"]
    assert summary["params"]["after"] <= summary["search"]["limit"]
    assert summary["search"]["limit"] == pytest.approx(
        finished_run["limit"] * summary["params"]["before"]
    )


def test_kept_sizes_respect_max_and_divisor(finished_run: dict) -> None:
    divisor = finished_run["divisor"]
    hparams = read_summary(finished_run["out"])["hparams"]
    for name, sizes in hparams.items():
        kept, full = sizes["kept"], sizes["max"]
        assert 1 <= kept <= full, name
        assert kept == full or kept % divisor == 0, (name, kept, full)
    assert any(sizes["kept"] < sizes["max"] for sizes in hparams.values()), "nothing was pruned"


def test_saved_model_loads_and_reproduces_the_reported_perplexity(
    finished_run: dict, corpus: Path
) -> None:
    out = finished_run["out"]
    summary = read_summary(out)
    model = nasframe.load(out)  # rebuilt from the registered name, no model passed
    assert sum(p.numel() for p in model.parameters()) == summary["params"]["after"]
    config = read_metadata(out)["config"]
    assert {name: config[name] for name in summary["hparams"]} == {
        name: sizes["kept"] for name, sizes in summary["hparams"].items()
    }
    measured = perplexity(model, evaluation_batches(corpus))
    assert measured == pytest.approx(summary["perplexity"]["after"], rel=1e-5)


def test_the_default_search_allocates_exactly_and_reconstructs_by_least_squares(
    finished_run: dict,
) -> None:
    summary = read_summary(finished_run["out"])
    search = summary["search"]
    assert (search["allocation"], search["normalize"], search["min_keep"]) == ("exact", "none", 0)
    assert summary["reconstruct"]["mode"] == "lsq"
    assert summary["reconstruct"]["reconstructed"], "no projection was repaired"
    assert summary["reconstruct"]["batches"] == CALIBRATION
    assert "reconstruct" in summary["timings_s"]


def test_allocation_and_reconstruction_flags_reach_the_search(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    flags = ["--allocation", "threshold", "--normalize", "sum", "--min-keep", "0.25"]
    argv = search_argv(corpus, out, "--constraint", "params=60%", "--reconstruct", "bias", *flags)
    code, _, stderr = run_main([*argv, "--no-checkpoint", "--quiet"])
    assert code == 0, stderr
    summary = read_summary(out)
    search = summary["search"]
    assert (search["allocation"], search["normalize"], search["min_keep"]) == (
        "threshold",
        "sum",
        0.25,
    )
    assert summary["reconstruct"]["mode"] == "bias"
    assert summary["params"]["fraction"] <= 0.6
    for name, sizes in summary["hparams"].items():
        assert sizes["kept"] >= 0.25 * sizes["max"], name
    model = nasframe.load(out)
    assert perplexity(model, evaluation_batches(corpus)) == pytest.approx(
        summary["perplexity"]["after"], rel=1e-5
    )


def test_search_uses_exactly_the_requested_calibration_batches(gradnas_run: dict) -> None:
    assert gradnas_run["code"] == 0, gradnas_run["stderr"][-2000:]
    assert read_summary(gradnas_run["out"])["search"]["calibration_batches"] == CALIBRATION


def test_progress_goes_to_stderr_unless_quiet(gradnas_run: dict) -> None:
    assert gradnas_run["code"] == 0
    assert "loading model byte-mlp-tiny" in gradnas_run["stderr"]
    assert "it/s" in gradnas_run["stderr"]  # tqdm bars


def test_python_dash_m_entry_point_with_quiet_prints_no_progress(fastnas_run: dict) -> None:
    assert fastnas_run["code"] == 0, fastnas_run["stderr"][-2000:]
    stderr = fastnas_run["stderr"]
    assert "Traceback" not in stderr
    assert "it/s" not in stderr and "%|" not in stderr and "\r" not in stderr, stderr[:500]
    assert "loading model" not in stderr
    assert "fastnas on byte-mlp-tiny at params=75%" in fastnas_run["stdout"]
    assert fastnas_run["checkpoint"].is_file()  # --checkpoint puts the state where it says
    assert not (fastnas_run["out"] / ".checkpoints").exists()
