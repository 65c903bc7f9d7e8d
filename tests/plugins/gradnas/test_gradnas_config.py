"""gradnas's typed search config: one clear error per bad field, frozen, the seed's dict form."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from gradnas.config import GradnasConfig
from gradnas.scoring import Convergence
from gradnas.searcher import GradientBinarySearcher
from gradnas_models import MLP, regression_batches, squared_error

from nasframe.api import convert
from nasframe.errors import UserInputError
from nasframe.searchers.config import BinarySearchConfig

SEED_KEYS = {
    "checkpoint",
    "verbose",
    "score_func",
    "uniform",
    "allocation",
    "normalize",
    "min_keep",
    "data_loader",
    "loss_func",
    "max_iter_data_loader",
    "average_scores",
    "convergence_tol",
    "convergence_patience",
    "convergence_min_batches",
}


def _required() -> dict:
    return {"data_loader": regression_batches(1), "loss_func": squared_error}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("data_loader", None, "gradnas needs data_loader in the search config: a list or"),
        ("loss_func", None, r"gradnas needs loss_func in the search config: loss_func\(model"),
        ("loss_func", 3, r"loss_func must be callable as loss_func\(model, batch\)\."),
        ("max_iter_data_loader", 0, "max_iter_data_loader must be a whole number >= 1, got 0"),
        ("max_iter_data_loader", True, "max_iter_data_loader must be a whole number"),
        ("average_scores", "no", "average_scores must be True or False, got 'no'"),
        ("convergence_tol", 0, "convergence_tol must be a positive number"),
        ("convergence_tol", False, "convergence_tol must be a positive number"),
        ("convergence_patience", 1.5, "convergence_patience must be a whole number >= 1"),
        ("convergence_min_batches", 0, "convergence_min_batches must be a whole number >= 1"),
        ("min_keep", 2, "min_keep must be a fraction"),  # the binary search's checks run too
    ],
)
def test_a_bad_value_of_each_field_is_one_clear_error(key: str, value, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        GradnasConfig.from_mapping({**_required(), key: value}, "gradnas")


def test_the_config_is_frozen_and_builds_the_convergence() -> None:
    config = GradnasConfig.from_mapping({**_required(), "convergence_tol": 0.01}, "gradnas")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_iter_data_loader = 4  # type: ignore[misc]
    assert config.convergence == Convergence(0.01, 4, 16)
    assert isinstance(config, BinarySearchConfig)


def test_a_score_func_is_dropped_with_a_warning_that_points_at_the_caller() -> None:
    space = convert(MLP(d=5, hidden=8, out=3))
    searcher = GradientBinarySearcher()
    config = {**_required(), "score_func": lambda model: 0.0, "verbose": False}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        searcher.search(space, "params=100%", config=config)
    (warning,) = [w for w in caught if "ignores the score_func" in str(w.message)]
    assert warning.filename == __file__  # the caller of search(), not nasframe's insides
    assert searcher.settings.score_func is None


def test_default_and_sanitized_configs_are_dicts_with_the_seeds_keys() -> None:
    searcher = GradientBinarySearcher()
    assert searcher.config_type is GradnasConfig
    defaults = searcher.default_search_config
    assert isinstance(defaults, dict) and set(defaults) == SEED_KEYS
    assert defaults["max_iter_data_loader"] == 128 and defaults["data_loader"] is None
    required = _required()
    sanitized = searcher.sanitize_search_config(required)
    assert isinstance(sanitized, dict) and set(sanitized) == SEED_KEYS
    assert sanitized["data_loader"] is required["data_loader"]  # handed on, not copied


def test_the_searcher_reads_its_settings() -> None:
    torch.manual_seed(0)
    batches = regression_batches(3)
    searcher = GradientBinarySearcher()
    config = {"data_loader": batches, "loss_func": squared_error, "max_iter_data_loader": 2}
    searcher.search(convert(MLP(d=5, hidden=8, out=3)), "params=80%", config={**config})
    assert searcher.settings.max_iter_data_loader == 2
    assert searcher.num_batches == 2
