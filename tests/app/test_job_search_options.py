"""The job asks the algorithm's config type which options it accepts, not its dict keys."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import nasframe.app.job
from nasframe.app.job import _search_config
from nasframe.app.job_data import JobBatches
from nasframe.app.job_settings import JobSettings
from nasframe.app.text import TextCorpus
from nasframe.errors import UserInputError
from nasframe.searchers.base import BaseSearcher
from nasframe.searchers.binary import BinarySearcher
from nasframe.searchers.config import BinarySearchConfig, SearchConfig


class PlainSearcher(BaseSearcher):
    """A searcher on the base config: no uniform, no allocation settings."""

    name = "plain"

    def run_search(self, checkpoint, kind, limit):  # pragma: no cover - refused before
        raise AssertionError("the job must refuse the options before searching")


@dataclasses.dataclass(frozen=True)
class LoaderConfig(BinarySearchConfig):
    data_loader: object = None


class LoaderSearcher(BinarySearcher):
    name = "loader"
    uses_score_func = False
    config_type = LoaderConfig

    def compute_importance(self, names):  # pragma: no cover - never searched here
        raise NotImplementedError


def _run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **settings) -> None:
    monkeypatch.setattr(nasframe.app.job, "get_algorithm", lambda name: PlainSearcher)

    def no_model(name: str):
        raise AssertionError("the job must refuse the options before loading the model")

    monkeypatch.setattr(nasframe.app.job, "get_model_entry", no_model)
    nasframe.app.job.run_job(JobSettings(out=str(tmp_path / "out"), **settings), log=print)


def test_uniform_is_refused_when_the_config_type_lacks_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(UserInputError) as caught:
        _run(monkeypatch, tmp_path, uniform=True)
    assert str(caught.value) == (
        "--uniform is not supported by --algo gradnas; drop --uniform or choose an algorithm "
        "that supports it (see `nasframe algos`)."
    )


@pytest.mark.parametrize(
    ("key", "value", "flag"),
    [("allocation", "global", "--allocation"), ("min_keep", 0.5, "--min-keep")],
)
def test_allocation_options_are_refused_when_the_config_type_lacks_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, key: str, value, flag: str
) -> None:
    with pytest.raises(UserInputError, match=f"^{flag} is not supported by --algo gradnas"):
        _run(monkeypatch, tmp_path, **{key: value})
    assert not (tmp_path / "out").exists()


def test_the_search_config_has_exactly_the_keys_the_config_type_accepts(tmp_path: Path) -> None:
    batch = torch.zeros(2, 5, dtype=torch.long)
    batches = JobBatches([batch, batch], [batch], [batch])
    corpus = TextCorpus("calibration text", "evaluation text", "test")
    settings = JobSettings(out=str(tmp_path), divisor=8, seq_len=4, batch_size=2)
    settings = dataclasses.replace(settings, calibration_batches=2, score_batches=1)

    plain = _search_config(PlainSearcher(), settings, batches, tmp_path, corpus)
    assert set(plain) == {"verbose", "checkpoint"}
    assert set(plain) <= set(SearchConfig.defaults())

    loader = _search_config(LoaderSearcher(), settings, batches, tmp_path, corpus)
    assert loader["data_loader"] is batches.calibration
    assert {"uniform", "allocation", "normalize", "min_keep"} <= set(loader)
    assert "score_func" not in loader and "loss_func" not in loader
    LoaderConfig.from_mapping(loader, "loader")  # everything the job passes is accepted
