"""An interrupted gradnas scoring resumes from its partial score sums, bit for bit, and the
scoring progress bar counts the batches the loader really holds.

In-process: the loss function raises KeyboardInterrupt (what Ctrl-C does) after ``k``
batches. Another process's SIGTERM, and data-parallel runs, are in
``tests/searchers/test_resume_sigterm.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from gradnas.data_manager import GradientDataManager
from gradnas.scoring import accumulate_mask_gradients
from gradnas.searcher import GradientBinarySearcher
from gradnas_models import regression_batches, squared_error
from models import ResidualMLP, seeded

from nasframe.api import convert
from nasframe.errors import UserInputError

BATCHES = 10


class Stop:
    """A loss function that counts its calls and raises KeyboardInterrupt at call ``at``."""

    def __init__(self, at: int | None = None) -> None:
        self.at, self.calls = at, 0

    def __call__(self, model: torch.nn.Module, batch) -> torch.Tensor:
        if self.calls == self.at:
            raise KeyboardInterrupt
        self.calls += 1
        return squared_error(model, batch)


def search(checkpoint: Path | None, loss: Stop, batches=None, **config):
    model = seeded(ResidualMLP, 5, 8, [12, 10], 3)
    searcher = GradientBinarySearcher()
    config = {
        "data_loader": regression_batches(BATCHES) if batches is None else batches,
        "loss_func": loss,
        "checkpoint": checkpoint,
        "verbose": False,
        **config,
    }
    result = searcher.search(convert(model), "params=60%", config=config)
    return searcher, result


def interrupted(path: Path, at: int, **config) -> dict:
    with pytest.raises(KeyboardInterrupt):
        search(path, Stop(at), **config)
    return json.loads(path.read_text(encoding="utf-8"))


def same_result(resumed, reference) -> None:
    assert resumed.importance.keys() == reference.importance.keys()
    for name, scores in reference.importance.items():
        assert torch.equal(resumed.importance[name], scores), name  # bit for bit
    assert resumed.sensitivity == reference.sensitivity
    assert resumed.config == reference.config


@pytest.mark.parametrize("at", [1, 4, BATCHES - 1])
def test_an_interrupted_scoring_resumes_to_the_uninterrupted_scores(tmp_path, at) -> None:
    _, reference = search(None, Stop())
    path = tmp_path / "search.json"
    state = interrupted(path, at)
    assert state["importance"] is None and state["partial_importance"]["batches"] == at
    loss = Stop()
    searcher, resumed = search(path, loss)
    assert loss.calls == BATCHES - at  # only the batches not done yet
    assert resumed.resumed and searcher.num_batches == BATCHES
    same_result(resumed, reference)
    assert json.loads(path.read_text(encoding="utf-8"))["partial_importance"] is None


def test_the_convergence_state_resumes_too(tmp_path) -> None:
    """Early stopping depends on the last mean and the calm count: both survive a resume."""
    settings = {"convergence_tol": 0.5, "convergence_patience": 2, "convergence_min_batches": 3}
    reference_searcher, reference = search(None, Stop(), **settings)
    assert reference_searcher.stopped_early and reference_searcher.num_batches < BATCHES
    path = tmp_path / "search.json"
    interrupted(path, reference_searcher.num_batches - 1, **settings)
    searcher, resumed = search(path, Stop(), **settings)
    assert searcher.stopped_early
    assert searcher.num_batches == reference_searcher.num_batches
    same_result(resumed, reference)


def test_the_partial_state_is_saved_every_few_batches(tmp_path, monkeypatch) -> None:
    """Not only when interrupted: a process killed outright keeps the last periodic save."""
    monkeypatch.setattr(GradientBinarySearcher, "SAVE_INTERVAL_S", 0.0)
    path, seen = tmp_path / "search.json", []

    def loss(model, batch):
        state = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        seen.append((state.get("partial_importance") or {}).get("batches"))
        return squared_error(model, batch)

    search(path, loss)
    assert seen == [None, *range(1, BATCHES)]


def test_a_checkpoint_of_other_calibration_data_is_refused(tmp_path) -> None:
    path = tmp_path / "search.json"
    interrupted(path, 3)
    before = path.read_text(encoding="utf-8")
    with pytest.raises(UserInputError, match="calibration data differ"):
        search(path, Stop(), batches=regression_batches(BATCHES, seed=1))
    with pytest.raises(UserInputError, match="scoring settings differ"):
        search(path, Stop(), max_iter_data_loader=BATCHES - 2)
    assert path.read_text(encoding="utf-8") == before  # the refused checkpoint is left alone


def test_a_caller_named_data_identity_replaces_the_digest(tmp_path) -> None:
    """A caller that knows its data (the CLI job) names it; a loader without a length or
    indexing (a generator here) then resumes too."""
    path = tmp_path / "search.json"
    with pytest.raises(KeyboardInterrupt):
        searcher = GradientBinarySearcher()
        searcher.data_identity = "calibration-v1"
        model = seeded(ResidualMLP, 5, 8, [12, 10], 3)
        config = {"data_loader": iter(regression_batches(BATCHES)), "loss_func": Stop(2)}
        searcher.search(convert(model), "params=60%", config={**config, "checkpoint": path})
    state = json.loads(path.read_text(encoding="utf-8"))
    assert state["fingerprint"]["data"] == "calibration-v1"
    assert state["partial_importance"]["batches"] == 2


# --- the progress bar -------------------------------------------------------------------------


def record_progress(data_loader, max_batches: int) -> dict:
    """The options ``accumulate_mask_gradients`` gives its progress bar."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 3)
    manager = GradientDataManager(3, layer)
    handle = layer.register_forward_hook(lambda module, args, out: out * manager.mask)
    seen: dict = {}

    def progress(iterable, **options):
        seen.update(options)
        return iterable

    try:
        accumulate_mask_gradients(
            layer, [manager], data_loader, squared_error, max_batches, progress=progress
        )
    finally:
        handle.remove()
    return seen


def test_the_progress_total_is_the_batches_the_loader_holds() -> None:
    batches = regression_batches(2)
    assert record_progress(batches, 128)["total"] == 2  # not 128
    assert record_progress(regression_batches(5), 3)["total"] == 3
    assert record_progress(iter(batches), 128)["total"] is None  # no length: unknown
    assert record_progress(batches, 128)["initial"] == 0


def test_the_searchers_progress_bar_gets_the_same_total(monkeypatch) -> None:
    totals = []
    real = GradientBinarySearcher.progress

    def progress(self, iterable=None, **options):
        if options.get("desc") == "gradnas scoring":
            totals.append((options["total"], options["initial"]))
        return real(self, iterable, **options)

    monkeypatch.setattr(GradientBinarySearcher, "progress", progress)
    search(None, Stop(), batches=regression_batches(2))
    assert totals == [(2, 0)]
