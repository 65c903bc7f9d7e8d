"""Another process interrupts a checkpointed search with SIGTERM; the rerun resumes it and
ends with exactly (bit for bit) the scores, sensitivities and config of an uninterrupted run.

gradnas is stopped in the middle of its scoring (the partial score sums are resumed), fastnas
in the middle of its measured sensitivities (its finished measurements are resumed), each as
one process and as two data-parallel ranks (gloo on localhost, started like torchrun does).
The worker, ``tests/resume_worker.py``, waits at a fixed call so the interruption always
falls after the same work.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.distributed as dist
from ranks import environment, free_port

TESTS = Path(__file__).parents[1]
WORKER = TESTS / "resume_worker.py"
#: Calls of each rank before the SIGTERM: gradnas's loss (of 8 batches, two rounds done),
#: fastnas's score (past its first hparam's measurements, into the second's).
STOP_AFTER = {"gradnas": 2, "fastnas": 12}


def start(algorithm: str, checkpoint: Path, out: Path, stop: str, world: int) -> list:
    port = free_port()
    return [
        subprocess.Popen(
            [sys.executable, str(WORKER), algorithm, str(checkpoint), str(out), stop],
            env=environment(None if world == 1 else rank, world, port, 30.0),
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(world)
    ]


def finish(processes: list) -> list[tuple[int, str]]:
    results = []
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        results.append((process.returncode, stderr))
    return results


def run(algorithm: str, checkpoint: Path, out: Path, world: int) -> list[dict]:
    results = finish(start(algorithm, checkpoint, out, "-", world))
    assert all(code == 0 for code, _ in results), results
    return [json.loads(Path(f"{out}.{rank}").read_text()) for rank in range(world)]


def interrupt(algorithm: str, checkpoint: Path, out: Path, world: int) -> None:
    """Start a run, wait until every rank made its STOP_AFTER calls, then SIGTERM each rank."""
    processes = start(algorithm, checkpoint, out, str(STOP_AFTER[algorithm]), world)
    ready = [Path(f"{out}.ready.{rank}") for rank in range(world)]
    deadline = time.monotonic() + 120
    while not all(path.exists() for path in ready):
        assert time.monotonic() < deadline, "the worker never reached the interruption point"
        assert all(p.poll() is None for p in processes), finish(processes)
        time.sleep(0.05)
    for process in processes:
        process.send_signal(signal.SIGTERM)
    results = finish(processes)
    assert [code for code, _ in results] == [143] * world, results


def _worlds() -> list:
    two = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")
    return [1, pytest.param(2, marks=two)]


@pytest.mark.parametrize("world", _worlds())
@pytest.mark.parametrize("algorithm", ["gradnas", "fastnas"])
def test_a_sigterm_run_resumes_to_the_uninterrupted_result(
    tmp_path: Path, algorithm: str, world: int
) -> None:
    reference = run(algorithm, tmp_path / "reference.json", tmp_path / "reference", world)

    checkpoint = tmp_path / "resumed.json"
    interrupt(algorithm, checkpoint, tmp_path / "stopped", world)
    state = json.loads(checkpoint.read_text(encoding="utf-8"))
    if algorithm == "gradnas":  # stopped after two completed rounds of `world` batches
        assert state["importance"] is None
        assert state["partial_importance"]["batches"] == STOP_AFTER[algorithm] * world
        done = STOP_AFTER[algorithm]  # loss calls of each rank
    else:  # the first hparam's measurements were kept, the interrupted one's were not
        assert state["importance"] is not None and state["partial_importance"] is None
        assert state["sensitivity"]
        done = sum(len(per_choice) for per_choice in state["sensitivity"].values())
        assert done < STOP_AFTER[algorithm]
    assert not list(tmp_path.glob(".*.tmp"))

    resumed = run(algorithm, checkpoint, tmp_path / "resumed", world)
    for before, after in zip(reference, resumed, strict=True):
        assert after["resumed"] is True and before["resumed"] is False
        assert after["importance"] == before["importance"]  # bit-identical floats
        assert after["sensitivity"] == before["sensitivity"]
        assert after["config"] == before["config"]
        # The rerun did only what the interrupted run had not finished.
        assert after["calls"] == before["calls"] - done
    assert json.loads(checkpoint.read_text(encoding="utf-8"))["partial_importance"] is None
