"""The shared search loop: search config, checkpoint and resume (threshold allocation is in
test_allocation.py)."""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch
from models import MLP, ResidualMLP, seeded
from torch import nn
from torch.nn import functional as F

import nasframe
from nasframe import UserInputError, convert, export
from nasframe.io.atomic import atomic_write_text
from nasframe.plugins import get_algorithm


def test_unknown_search_config_key_lists_the_valid_keys() -> None:
    with pytest.raises(UserInputError) as error:
        get_algorithm("fastnas")().sanitize_search_config({"score_fn": None})
    message = str(error.value)
    assert "score_fn" in message and "fastnas" in message
    assert (
        "valid keys: allocation, checkpoint, min_keep, normalize, score_func, uniform, verbose."
        in message
    )

    with pytest.raises(UserInputError) as error:
        get_algorithm("gradnas")().sanitize_search_config({"dataloader": []})
    message = str(error.value)
    assert "dataloader" in message
    for key in get_algorithm("gradnas")().default_search_config:
        assert key in message


def test_search_config_defaults_are_filled_in() -> None:
    def score(model) -> float:
        return 0.0

    config = get_algorithm("fastnas")().sanitize_search_config({"score_func": score})
    assert config == {
        "checkpoint": None,
        "verbose": True,
        "score_func": score,
        "uniform": False,
        "allocation": "threshold",
        "normalize": "none",
        "min_keep": 0.0,
    }


def test_fastnas_without_score_func_says_what_to_pass() -> None:
    with pytest.raises(UserInputError, match="fastnas needs a score_func in the search config"):
        nasframe.search(seeded(MLP, 3, [6], 2), "params=80%", algorithm="fastnas")


def test_unknown_algorithm_lists_the_known_ones() -> None:
    with pytest.raises(UserInputError, match="unknown algorithm 'nope'; choose one of: .*fastnas"):
        nasframe.search(seeded(MLP, 3, [6], 2), "params=80%", algorithm="nope")


def test_a_model_with_nothing_searchable_is_reported() -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(UserInputError, match="nothing searchable"):
        nasframe.search(model, "params=80%", algorithm="fastnas", config={"score_func": len})


# --- checkpoint and resume ------------------------------------------------------------------


def residual_model():
    return seeded(ResidualMLP, 4, 8, [10, 12], 3, seed=3)


class Scorer:
    """Minus the MSE on fixed data; counts calls and can simulate Ctrl-C after some."""

    def __init__(self, interrupt_after: int | None = None) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(32, 4, generator=generator)
        with torch.no_grad():
            self.y = residual_model()(self.x) + 0.1 * torch.randn(32, 3, generator=generator)
        self.calls = 0
        self.interrupt_after = interrupt_after

    def __call__(self, model) -> float:
        if self.interrupt_after is not None and self.calls >= self.interrupt_after:
            raise KeyboardInterrupt
        self.calls += 1
        return -float(F.mse_loss(model(self.x), self.y))


def run_fastnas(model_or_space, scorer, checkpoint=None, constraint="params=60%"):
    config = {"score_func": scorer, "checkpoint": checkpoint, "verbose": False}
    return nasframe.search(model_or_space, constraint, algorithm="fastnas", config=config)


def test_interrupted_search_resumes_from_its_checkpoint(tmp_path) -> None:
    fresh = Scorer()
    fresh_space, fresh_result = run_fastnas(residual_model(), fresh)
    assert not fresh_result.resumed
    expected = export(fresh_space)(fresh.x)

    path = tmp_path / "search.json"
    interrupted = Scorer(interrupt_after=fresh.calls // 2)
    space = convert(residual_model())
    with pytest.raises(KeyboardInterrupt):
        run_fastnas(space, interrupted, path)
    saved = json.loads(path.read_text())
    assert saved["importance"] is not None
    assert 0 < len(saved["sensitivity"]) < len(space.hparams)
    assert sorted(os.listdir(tmp_path)) == ["search.json"]  # no temporary file left

    # A new process: a freshly built model resumes.
    resumed = Scorer()
    resumed_space, result = run_fastnas(residual_model(), resumed, path)
    assert result.resumed
    assert 0 < resumed.calls < fresh.calls
    assert result.config == fresh_result.config
    assert result.sensitivity == fresh_result.sensitivity
    torch.testing.assert_close(export(resumed_space)(fresh.x), expected, atol=1e-5, rtol=0)

    # The same process: the interrupted space (already sorted) resumes to the same model.
    again = Scorer()
    same_space, result = run_fastnas(space, again, path)
    assert result.resumed and again.calls < fresh.calls
    assert result.config == fresh_result.config
    torch.testing.assert_close(export(same_space)(fresh.x), expected, atol=1e-5, rtol=0)
    assert sorted(os.listdir(tmp_path)) == ["search.json"]


def test_a_finished_checkpoint_serves_another_budget_on_the_same_space(tmp_path) -> None:
    path = tmp_path / "search.json"
    space, _ = run_fastnas(residual_model(), Scorer(), path, "params=80%")
    assert os.listdir(tmp_path) == ["search.json"]  # written atomically: no temporary files
    scorer = Scorer()
    space, result = run_fastnas(space, scorer, path, "params=50%")
    assert scorer.calls == 0  # everything came from the checkpoint
    reference_space, reference = run_fastnas(residual_model(), Scorer(), None, "params=50%")
    assert result.config == reference.config
    x = scorer.x
    torch.testing.assert_close(export(space)(x), export(reference_space)(x), atol=1e-5, rtol=0)


def test_a_checkpoint_of_another_search_space_is_refused(tmp_path) -> None:
    path = tmp_path / "search.json"
    run_fastnas(residual_model(), Scorer(), path)
    before = path.read_text()
    other = seeded(ResidualMLP, 4, 8, [10, 6], 3)
    with pytest.raises(UserInputError) as error:
        run_fastnas(other, Scorer(), path)
    assert "was written by a different search" in str(error.value)
    assert "delete it or pass another checkpoint path" in str(error.value)
    assert path.read_text() == before  # the refused checkpoint is left alone


def test_a_checkpoint_of_another_algorithm_is_refused(tmp_path) -> None:
    path = tmp_path / "search.json"
    run_fastnas(residual_model(), Scorer(), path)
    scorer = Scorer()
    config = {
        "checkpoint": path,
        "data_loader": [(scorer.x, scorer.y)],
        "loss_func": lambda model, batch: F.mse_loss(model(batch[0]), batch[1]),
        "verbose": False,
    }
    with pytest.raises(UserInputError, match="was written by a different search"):
        nasframe.search(residual_model(), "params=60%", algorithm="gradnas", config=config)


def test_an_unreadable_checkpoint_is_reported(tmp_path) -> None:
    path = tmp_path / "search.json"
    path.write_text("{not json")
    with pytest.raises(
        UserInputError, match="is unreadable .*delete it to start the search afresh"
    ):
        run_fastnas(residual_model(), Scorer(), path)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path) -> None:
    path = tmp_path / "state.json"
    atomic_write_text(path, "old")

    def broken(temporary: str) -> None:
        with open(temporary, "w") as handle:
            handle.write("half")
        raise KeyboardInterrupt

    from nasframe.io.atomic import atomic_write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["state.json"]


def test_search_leaves_the_space_at_the_result_and_reports_costs() -> None:
    model = residual_model()
    total = sum(p.numel() for p in copy.deepcopy(model).parameters())
    space, result = run_fastnas(model, Scorer(), None, "params=70%")
    assert space.config() == result.config
    assert result.cost_before == total
    assert result.limit == pytest.approx(0.7 * total)
    assert result.cost_after == sum(p.numel() for p in export(space).parameters())
    assert result.cost_after <= result.limit
    assert result.constraint == "params=70%"
    assert set(result.timings) == {"importance", "sensitivity", "allocation"}


def test_a_checkpoint_of_a_retrained_model_of_the_same_shape_is_refused(tmp_path) -> None:
    path = tmp_path / "search.json"
    run_fastnas(residual_model(), Scorer(), path)
    retrained = seeded(ResidualMLP, 4, 8, [10, 12], 3, seed=4)  # same shapes, other weights
    with pytest.raises(UserInputError, match="was written by a different search"):
        run_fastnas(retrained, Scorer(), path)


def test_the_weights_digest_ignores_unit_order() -> None:
    from nasframe.searchers.checkpoint import weights_digest

    model = residual_model()
    before = weights_digest(model)
    space = convert(model)
    for hparam in space.hparams.values():
        hparam.importance = torch.rand(hparam.max, generator=torch.Generator().manual_seed(1))
    space.sort_parameters()
    assert weights_digest(space.model) == before
