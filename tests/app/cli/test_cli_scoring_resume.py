"""The ``nasframe`` command resumes an interrupted gradnas *scoring*: a SIGTERM between
calibration batches exits 143 with the partial score sums checkpointed, the rerun scores only
the remaining batches and ends with the uninterrupted run's scores and config; a checkpoint
of other calibration data, named with --checkpoint, is refused."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from cli_runner import run_main
from cli_support import CALIBRATION, files_under, search_argv

import nasframe.app.job
from nasframe.app.cli import EXIT_TERMINATED
from nasframe.app.lm import next_token_loss
from nasframe.io.serialization import read_metadata

STOP_AFTER = 2  # of the CALIBRATION batches


def gradnas_argv(corpus: Path, out: Path, *extra: str) -> list[str]:
    argv = search_argv(corpus, out, "--algo", "gradnas", "--constraint", "params=70%")
    return [*argv, "--divisor", "8", "--quiet", *extra]


def checkpoint_of(out: Path) -> dict:
    (checkpoint,) = files_under(out / ".checkpoints")
    return json.loads(checkpoint.read_text(encoding="utf-8"))


def counting_loss(monkeypatch: pytest.MonkeyPatch, sigterm_at: int | None) -> list[int]:
    """Count the job's scoring losses (those under autograd: reconstruction's forwards are
    not); send this process SIGTERM at scoring call ``sigterm_at``."""
    calls = [0]

    def loss(model, batch):
        if torch.is_grad_enabled():
            if calls[0] == sigterm_at:
                os.kill(os.getpid(), signal.SIGTERM)
            calls[0] += 1
        return next_token_loss(model, batch)

    monkeypatch.setattr(nasframe.app.job, "next_token_loss", loss)
    return calls


def test_sigterm_during_scoring_resumes_to_the_uninterrupted_result(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference_out = tmp_path / "reference"
    code, _, stderr = run_main(gradnas_argv(corpus, reference_out))
    assert code == 0, stderr
    reference = checkpoint_of(reference_out)

    out = tmp_path / "out"
    counting_loss(monkeypatch, sigterm_at=STOP_AFTER)
    code, _, stderr = run_main(gradnas_argv(corpus, out))
    assert code == EXIT_TERMINATED, stderr
    assert "resume" in stderr.strip().splitlines()[-1]
    partial = checkpoint_of(out)
    assert partial["importance"] is None
    assert partial["partial_importance"]["batches"] == STOP_AFTER
    assert partial["fingerprint"]["data"] == reference["fingerprint"]["data"]

    calls = counting_loss(monkeypatch, sigterm_at=None)
    code, _, stderr = run_main(gradnas_argv(corpus, out))
    assert code == 0, stderr
    assert calls[0] == CALIBRATION - STOP_AFTER  # the scoring read only the batches not done
    resumed = checkpoint_of(out)
    assert resumed["importance"] == reference["importance"]  # bit for bit
    assert resumed["sensitivity"] == reference["sensitivity"]
    assert read_metadata(out)["config"] == read_metadata(reference_out)["config"]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["search"]["resumed_from_checkpoint"] is True
    assert summary["search"]["scoring"]["num_batches"] == CALIBRATION


def test_a_named_checkpoint_of_other_calibration_data_is_refused(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = tmp_path / "state.json"
    counting_loss(monkeypatch, sigterm_at=STOP_AFTER)
    code, _, stderr = run_main(
        gradnas_argv(corpus, tmp_path / "a", "--checkpoint", str(checkpoint))
    )
    assert code == EXIT_TERMINATED, stderr
    monkeypatch.setattr(nasframe.app.job, "next_token_loss", next_token_loss)
    argv = gradnas_argv(corpus, tmp_path / "b", "--checkpoint", str(checkpoint), "--seq-len", "12")
    code, _, stderr = run_main(argv)
    assert code == 2
    assert "calibration data differ" in stderr and "delete it" in stderr
