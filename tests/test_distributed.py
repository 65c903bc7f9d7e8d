"""Data-parallel scoring on torch.distributed (gloo on localhost, two processes).

Each rank is a fresh Python process started like torchrun starts them (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), so the tests see what a user's run sees.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.distributed as dist
from ranks import environment, free_port, run_script_ranks

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")

TESTS = Path(__file__).parent
WORKER = TESTS / "distributed_worker.py"


def run_ranks(mode: str, out: Path, world: int, timeout_s: float = 30.0):
    """Start ``world`` ranks (one plain process when world is 1); (return codes, stderr)."""
    return run_script_ranks([str(WORKER), mode, str(out)], world, timeout_s)


def read(out: Path, rank: int) -> dict:
    return json.loads(Path(f"{out}.{rank}").read_text(encoding="utf-8"))


@pytest.mark.parametrize("mode", ["gradnas", "fastnas"])
def test_two_ranks_score_like_one_process_and_reach_the_same_config(tmp_path, mode):
    single = run_ranks(mode, tmp_path / "single", world=1)
    assert single[0][0] == 0, single[0][1]
    pair = run_ranks(mode, tmp_path / "pair", world=2)
    assert all(code == 0 for code, _ in pair), [err for _, err in pair]
    alone, rank0, rank1 = (
        read(tmp_path / "single", 0),
        *(read(tmp_path / "pair", r) for r in (0, 1)),
    )
    assert (alone["world_size"], rank0["world_size"]) == (1, 2)
    for name, scores in alone["importance"].items():
        for other in (rank0, rank1):
            assert other["importance"][name] == pytest.approx(scores, rel=1e-5, abs=1e-9)
    assert rank0["config"] == rank1["config"] == alone["config"]


def test_a_rank_that_raises_ends_every_rank_with_an_error_within_the_timeout(tmp_path):
    start = time.monotonic()
    results = run_ranks("fail", tmp_path / "fail", world=2, timeout_s=10.0)
    elapsed = time.monotonic() - start
    assert all(code != 0 for code, _ in results), results
    assert "rank 1 fails on purpose" in results[1][1]
    assert elapsed < 120, elapsed
    assert not list(tmp_path.glob("fail.*"))  # nobody wrote a result


def test_torchrun_runs_the_cli_job_and_rank_0_writes_what_one_process_writes(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "\n\n".join(
            f"Document {i}: " + " ".join(f"word{(i * 7 + j) % 50}" for j in range(120))
            for i in range(120)
        ),
        encoding="utf-8",
    )
    args = ["search", "--model", "byte-mlp-tiny", "--data", str(corpus)]
    args += ["--constraint", "params=70%", "--seq-len", "32", "--batch-size", "4"]
    args += ["--calibration-batches", "5", "--eval-batches", "3", "--no-checkpoint", "--quiet"]
    env = environment(None, 1, 0, 60.0)
    alone = subprocess.run(
        [sys.executable, "-m", "nasframe", *args, "--out", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert alone.returncode == 0, alone.stderr
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    launcher += ["--master-port", str(free_port())]
    pair = subprocess.run(
        [*launcher, "-m", "nasframe", *args, "--out", str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pair.returncode == 0, pair.stderr
    assert pair.stdout.count("saved to") == 1  # rank 0 alone reports
    one, two = (
        json.loads((tmp_path / name / "summary.json").read_text(encoding="utf-8"))
        for name in ("one", "two")
    )
    assert two["environment"]["ranks"] == 2 and one["environment"]["ranks"] == 1
    assert two["hparams"] == one["hparams"]
    for key in ("before", "after"):
        assert two["perplexity"][key] == pytest.approx(one["perplexity"][key], rel=1e-5)


@pytest.mark.parametrize("value", ["ten", "0", "-5", "nan", "inf"])
def test_a_malformed_timeout_is_one_clear_error(monkeypatch, value):
    from nasframe import distributed
    from nasframe.errors import UserInputError

    monkeypatch.setenv("NASFRAME_DIST_TIMEOUT", value)
    with pytest.raises(UserInputError, match="NASFRAME_DIST_TIMEOUT=.* is not a positive number"):
        distributed.timeout_from_environment()


def test_the_timeout_defaults_to_600_seconds_and_reads_the_environment(monkeypatch):
    from nasframe import distributed

    monkeypatch.delenv("NASFRAME_DIST_TIMEOUT", raising=False)
    assert distributed.timeout_from_environment() == 600.0
    monkeypatch.setenv("NASFRAME_DIST_TIMEOUT", "12.5")
    assert distributed.timeout_from_environment() == 12.5


# --- one all-reduce for tensors, one convenience for Python numbers --------------------------


def test_one_tensor_all_reduce_remains() -> None:
    from nasframe import distributed

    assert not hasattr(distributed, "sum_tensor_over_ranks")


def test_without_a_group_the_tensor_itself_comes_back() -> None:
    import torch

    from nasframe import distributed

    tensor = torch.arange(3.0)
    assert distributed.all_reduce_sum(tensor) is tensor
    assert torch.equal(tensor, torch.arange(3.0))


def test_numbers_come_back_as_float64_floats() -> None:
    from nasframe import distributed

    total, count = distributed.sum_over_ranks([0.1, 3])
    assert (total, count) == (0.1, 3.0)
    assert isinstance(count, float)


def test_the_reduce_is_in_place_on_the_given_tensor(monkeypatch) -> None:
    import torch

    from nasframe import distributed

    """With a (gloo-like) group, the tensor is reduced where it is, no copy returned."""
    seen: list[torch.Tensor] = []

    def fake_all_reduce(tensor: torch.Tensor, op: object) -> None:
        seen.append(tensor)
        tensor.mul_(2)  # two ranks holding the same values

    monkeypatch.setattr(distributed, "is_active", lambda: True)
    monkeypatch.setattr(distributed.dist, "get_backend", lambda: "gloo")
    monkeypatch.setattr(distributed.dist, "all_reduce", fake_all_reduce)
    tensor = torch.ones(2)
    assert distributed.all_reduce_sum(tensor) is tensor and seen == [tensor]
    assert distributed.sum_over_ranks([1.5, 2.0]) == [3.0, 4.0]
