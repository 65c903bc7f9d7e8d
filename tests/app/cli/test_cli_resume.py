"""Checkpoints and resuming: rerunning a command resumes it, a new budget reuses the
checkpoint, other calibration data does not; Ctrl-C and SIGTERM stop cleanly and resume."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from cli_runner import run_main
from cli_support import (
    OUTPUT_FILES,
    files_under,
    read_summary,
    search_argv,
)

import nasframe
import nasframe.app.job
from nasframe.app.cli import EXIT_INTERRUPTED, EXIT_TERMINATED
from nasframe.io.serialization import read_metadata
from nasframe.space.hparam import ChoiceRule


def rerun_in_copy(run: dict, tmp_path: Path, *extra: str) -> tuple[int, str, dict]:
    """Rerun ``run``'s command (plus ``extra``) on a copy of its output folder."""
    out = tmp_path / "out"
    shutil.copytree(run["out"], out)
    argv = [*run["argv"], "--quiet", *extra]
    argv[argv.index("--out") + 1] = str(out)
    code, _, stderr = run_main(argv)
    return code, stderr, read_summary(out) if code == 0 else {}


def test_rerunning_the_same_command_resumes_with_the_same_result(
    gradnas_run: dict, tmp_path: Path
) -> None:
    assert gradnas_run["code"] == 0
    first = read_summary(gradnas_run["out"])
    code, stderr, again = rerun_in_copy(gradnas_run, tmp_path)
    assert code == 0, stderr
    assert again["search"]["resumed_from_checkpoint"] is True
    assert again["hparams"] == first["hparams"]
    assert read_metadata(tmp_path / "out")["config"] == read_metadata(gradnas_run["out"])["config"]
    assert again["perplexity"]["after"] == pytest.approx(first["perplexity"]["after"], rel=1e-6)


def test_a_new_budget_reuses_the_checkpoint(gradnas_run: dict, tmp_path: Path) -> None:
    assert gradnas_run["code"] == 0
    code, stderr, summary = rerun_in_copy(gradnas_run, tmp_path, "--constraint", "params=50%")
    assert code == 0, stderr
    assert summary["search"]["resumed_from_checkpoint"] is True
    assert summary["params"]["fraction"] <= 0.50


def test_a_checkpoint_of_other_calibration_data_is_not_reused(
    gradnas_run: dict, tmp_path: Path
) -> None:
    assert gradnas_run["code"] == 0
    code, stderr, summary = rerun_in_copy(gradnas_run, tmp_path, "--calibration-batches", "3")
    assert code == 0, stderr
    assert summary["search"]["resumed_from_checkpoint"] is False
    assert len(files_under(tmp_path / "out" / ".checkpoints")) == 2


def test_no_checkpoint_writes_no_checkpoint(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = search_argv(corpus, out, "--algo", "gradnas", "--constraint", "params=60%")
    code, _, stderr = run_main([*argv, "--no-checkpoint", "--quiet"])
    assert code == 0, stderr
    assert {p.relative_to(out).as_posix() for p in files_under(out)} == OUTPUT_FILES
    assert read_summary(out)["search"]["resumed_from_checkpoint"] is False
    assert not list(tmp_path.rglob("*.tmp"))


# --- interrupts -------------------------------------------------------------------------------


def test_ctrl_c_exits_130_and_the_rerun_resumes(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupt fastnas in the middle of measuring sensitivities, then rerun the command."""
    out = tmp_path / "out"
    argv = search_argv(corpus, out, "--algo", "fastnas", "--constraint", "params=70%", "--quiet")
    argv += ["--divisor", "8"]
    real_mean_loss = nasframe.app.job.mean_loss
    calls, interrupt_at = 0, 6  # one score per allowed size; the first hparam has 4 sizes

    def counting(model, batches):
        nonlocal calls
        calls += 1
        if calls == interrupt_at:
            raise KeyboardInterrupt
        return real_mean_loss(model, batches)

    monkeypatch.setattr(nasframe.app.job, "mean_loss", counting)
    code, _, stderr = run_main(argv)
    assert code == EXIT_INTERRUPTED
    assert "Traceback" not in stderr
    assert "resume" in stderr.strip().splitlines()[-1]
    names = {p.name for p in files_under(out)}
    assert not names & OUTPUT_FILES, names  # no half-written model or summary
    assert not [name for name in names if name.endswith(".tmp")]
    (checkpoint,) = files_under(out / ".checkpoints")
    done = set(json.loads(checkpoint.read_text(encoding="utf-8"))["sensitivity"])
    assert done, "the interrupt came before the first sensitivity was saved"

    calls, interrupt_at = 0, None
    code, _, stderr = run_main(argv)
    assert code == 0, stderr
    summary = read_summary(out)
    assert summary["search"]["resumed_from_checkpoint"] is True
    # Only the hparams the interrupted run had not finished were scored again.
    remaining = [name for name in summary["hparams"] if name not in done]
    assert calls == sum(
        len(ChoiceRule(divisor=8).choices(summary["hparams"][name]["max"])) for name in remaining
    )
    assert summary["params"]["fraction"] <= 0.70


def test_sigterm_exits_143_and_the_rerun_resumes(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduler's SIGTERM mid-search stops cleanly, keeping the checkpoint."""
    import signal

    out = tmp_path / "out"
    argv = search_argv(corpus, out, "--algo", "fastnas", "--constraint", "params=70%", "--quiet")
    real_mean_loss = nasframe.app.job.mean_loss
    calls = 0

    def counting(model, batches):
        nonlocal calls
        calls += 1
        if calls == 6:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_mean_loss(model, batches)

    monkeypatch.setattr(nasframe.app.job, "mean_loss", counting)
    previous_handler = signal.getsignal(signal.SIGTERM)
    code, _, stderr = run_main(argv)
    assert code == EXIT_TERMINATED
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("nasframe: terminated; rerun the same")
    assert signal.getsignal(signal.SIGTERM) == previous_handler  # restored
    names = {p.name for p in files_under(out)}
    assert not names & OUTPUT_FILES, names
    (checkpoint,) = files_under(out / ".checkpoints")
    assert json.loads(checkpoint.read_text(encoding="utf-8"))["sensitivity"]

    monkeypatch.setattr(nasframe.app.job, "mean_loss", real_mean_loss)
    code, _, stderr = run_main(argv)
    assert code == 0, stderr
    assert read_summary(out)["search"]["resumed_from_checkpoint"] is True
