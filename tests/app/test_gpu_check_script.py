"""``benchmarks/gpu_check.py`` without CUDA: a message, a JSON report that says it skipped,
exit code 0 (CI never needs a GPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: it would run")
def test_the_gpu_check_skips_cleanly_without_cuda(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "no CUDA device" in done.stderr
    report = json.loads(done.stdout)
    assert report["skipped"] == "no CUDA device available"
    assert json.loads(out.read_text()) == report
