"""The typed search configs: one clear error per bad field, frozen, and the seed's dict form."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from nasframe.errors import UserInputError
from nasframe.plugins import get_algorithm
from nasframe.searchers.base import BaseSearcher
from nasframe.searchers.binary import BinarySearcher
from nasframe.searchers.binary import check_allocation_settings as from_binary
from nasframe.searchers.config import BinarySearchConfig, SearchConfig


def _score(model) -> float:
    return 0.0


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("checkpoint", 3, "checkpoint must be a file path"),
        ("verbose", "yes", "verbose must be True or False, got 'yes'"),
        ("score_func", "minus loss", "score_func must be callable"),
        ("uniform", 1, "uniform must be True or False, got 1"),
        (
            "allocation",
            "greedy",
            "allocation must be one of threshold, global, exact, got 'greedy'",
        ),
        ("normalize", "mean", "normalize must be one of none, sum, max, got 'mean'"),
        ("min_keep", -0.1, r"min_keep must be a fraction of each hparam's size in \[0, 1\]"),
        ("min_keep", "half", "min_keep must be a fraction"),
    ],
)
def test_a_bad_value_of_each_field_is_one_clear_error(key: str, value, message: str) -> None:
    with pytest.raises(UserInputError, match=message) as caught:
        BinarySearchConfig.from_mapping({key: value}, "fastnas")
    assert str(caught.value).count(".") >= 1 and "\n" not in str(caught.value)


def test_an_unknown_key_names_the_algorithm_and_lists_the_valid_keys() -> None:
    with pytest.raises(UserInputError) as caught:
        SearchConfig.from_mapping({"verbose": False, "seed": 1}, "mine")
    assert str(caught.value) == (
        "unknown search config key(s) seed for mine; valid keys: checkpoint, verbose."
    )


def test_building_the_dataclass_directly_validates_too() -> None:
    with pytest.raises(UserInputError, match="allocation must be one of"):
        BinarySearchConfig(allocation="greedy")


def test_the_config_is_frozen() -> None:
    config = BinarySearchConfig.from_mapping({"checkpoint": Path("c.json")}, "fastnas")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.min_keep = 0.5  # type: ignore[misc]
    assert config.checkpoint == Path("c.json")


def test_defaults_and_supports_come_from_the_fields() -> None:
    assert SearchConfig.defaults() == {"checkpoint": None, "verbose": True}
    assert BinarySearchConfig.supports("uniform") and BinarySearchConfig.supports("checkpoint")
    assert not SearchConfig.supports("uniform") and not SearchConfig.supports("allocation")


def test_the_dict_form_is_shallow() -> None:
    """A score function (or a data loader) is handed on as it is, never copied."""
    config = BinarySearchConfig(score_func=_score, checkpoint="x")
    assert config.as_dict()["score_func"] is _score
    assert dataclasses.replace(config, checkpoint=None).as_dict()["checkpoint"] is None
    assert SearchConfig(checkpoint="y").as_dict() == {"checkpoint": "y", "verbose": True}


def test_searchers_keep_the_seeds_dict_api() -> None:
    fastnas = get_algorithm("fastnas")()
    assert fastnas.config_type is BinarySearchConfig
    assert fastnas.default_search_config == {
        "checkpoint": None,
        "verbose": True,
        "score_func": None,
        "uniform": False,
        "allocation": "threshold",
        "normalize": "none",
        "min_keep": 0.0,
    }
    sanitized = fastnas.sanitize_search_config({"score_func": _score, "min_keep": 0.25})
    assert isinstance(sanitized, dict)
    assert sanitized == {**fastnas.default_search_config, "score_func": _score, "min_keep": 0.25}
    assert fastnas.config == {}  # nothing configured yet
    settings = fastnas.configure({"score_func": _score, "uniform": True})
    assert fastnas.settings is settings and settings.uniform is True
    assert fastnas.config == settings.as_dict()


def test_a_subclass_declares_its_keys_with_a_config_subclass() -> None:
    @dataclasses.dataclass(frozen=True)
    class SeededConfig(BinarySearchConfig):
        seed: int = 0

    class Seeded(BinarySearcher):
        name = "seeded"
        config_type = SeededConfig

        def compute_importance(self, names):  # pragma: no cover - never searched here
            raise NotImplementedError

    searcher = Seeded()
    assert searcher.default_search_config["seed"] == 0
    assert searcher.configure({"seed": 7}).seed == 7
    with pytest.raises(UserInputError, match="valid keys: allocation, checkpoint, min_keep"):
        searcher.sanitize_search_config({"sed": 7})


def test_the_base_searcher_accepts_only_the_base_keys() -> None:
    assert BaseSearcher.config_type is SearchConfig
    with pytest.raises(UserInputError, match="unknown search config key"):
        SearchConfig.from_mapping({"uniform": True}, "base")


def test_check_allocation_settings_stays_importable_from_binary() -> None:
    from nasframe.searchers.allocator import check_allocation_settings

    assert from_binary is check_allocation_settings
    with pytest.raises(UserInputError, match="min_keep must be a fraction"):
        from_binary("threshold", "none", True)
