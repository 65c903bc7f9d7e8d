"""Reconstruction's statistics: measured in chunks under a tiny memory budget, kept for
other budgets and modes, and gathered across data-parallel ranks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from ranks import run_script_ranks
from reconstruction_support import batches_for, mlp_space

import nasframe


@pytest.mark.parametrize("mode", ["bias", "lsq"])
def test_a_tiny_statistics_budget_measures_in_chunks_with_the_same_result(mode):
    spaces = [mlp_space(widths=(16, 12, 10), importance_seed=2) for _ in range(2)]
    config = {"layers.0.out_features": 9, "layers.1.out_features": 5, "layers.2.out_features": 3}
    calls = []

    def forward(model, batch):
        calls.append(1)
        return model(batch)

    batches = batches_for(6, count=4)
    for space in spaces:
        space.select(config)
    nasframe.reconstruct(spaces[0], batches, forward, mode)
    assert len(calls) == 4  # one pass for every target
    calls.clear()
    one_shot = iter(batches)  # an iterator is read once and kept for every pass
    report = nasframe.reconstruct(spaces[1], one_shot, forward, mode, max_stats_bytes=1)
    assert len(calls) == 3 * 4 and report.batches == 4  # a pass per target
    first, second = (space.model.state_dict() for space in spaces)
    for name, value in first.items():
        assert torch.equal(value, second[name]), name


def test_kept_statistics_serve_other_budgets_and_modes_without_running_the_model_again():
    config = {"layers.0.out_features": 9, "layers.1.out_features": 5, "layers.2.out_features": 3}
    smaller = {"layers.0.out_features": 4, "layers.1.out_features": 5, "layers.2.out_features": 6}
    calls = []

    def forward(model, batch):
        calls.append(1)
        return model(batch)

    batches = batches_for(6, count=4)
    kept: dict = {}
    for mode, selected in (("lsq", config), ("lsq", smaller), ("bias", config)):
        fresh, cached = (mlp_space(widths=(16, 12, 10), importance_seed=2) for _ in range(2))
        for space in (fresh, cached):
            space.select(selected)
        calls.clear()
        nasframe.reconstruct(fresh, batches, forward, mode)
        measured = len(calls)
        calls.clear()
        nasframe.reconstruct(cached, batches, forward, mode, statistics=kept)
        # the first call measures (and keeps), later calls on the same model measure nothing
        assert len(calls) == (measured if mode == "lsq" and selected is config else 0)
        for name, value in fresh.model.state_dict().items():
            assert torch.equal(value, cached.model.state_dict()[name]), (mode, name)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")
def test_two_ranks_reconstruct_like_one_process(tmp_path):
    worker = Path(__file__).parent / "reconstruct_worker.py"

    def start(out: Path, world: int) -> list[tuple[int, str]]:
        return run_script_ranks([str(worker), str(out)], world)

    assert all(code == 0 for code, _ in start(tmp_path / "one", 1))
    pair = start(tmp_path / "two", 2)
    assert all(code == 0 for code, _ in pair), [err for _, err in pair]
    alone, *ranks = (
        json.loads(Path(f"{tmp_path / name}.{rank}").read_text(encoding="utf-8"))
        for name, rank in (("one", 0), ("two", 0), ("two", 1))
    )
    assert [r["world_size"] for r in ranks] == [2, 2] and alone["reconstructed"]
    for record in ranks:
        assert record["reconstructed"] == alone["reconstructed"]
        for name, values in alone["weights"].items():
            assert record["weights"][name] == pytest.approx(values, rel=1e-9, abs=1e-12)
