"""Hparam and ChoiceRule: allowed sizes, validation, and which units a smaller size keeps."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from models import MLP, seeded

from nasframe import ChoiceRule, Hparam, UserInputError, convert


def test_choices_are_sorted_unique_and_end_at_max() -> None:
    hparam = Hparam(6, [4, 2, 6, 2], name="h")
    assert hparam.choices == [2, 4, 6]
    assert (hparam.min, hparam.max, hparam.original, hparam.active) == (2, 6, 6, 6)
    assert hparam.is_searchable


def test_default_choices_are_every_size() -> None:
    assert Hparam(4).choices == [1, 2, 3, 4]


def test_choices_without_the_full_size_are_rejected() -> None:
    with pytest.raises(ValueError, match="must include the full size 6"):
        Hparam(6, [2, 4])


def test_only_full_size_is_not_searchable() -> None:
    hparam = Hparam(5, [5])
    assert not hparam.is_searchable
    assert hparam.min == hparam.max == 5


def test_active_is_validated_with_a_message_listing_the_choices() -> None:
    hparam = Hparam(8, [2, 4, 8], name="blocks.0.fc1.out_features")
    hparam.active = 4
    assert hparam.active == 4
    with pytest.raises(UserInputError) as error:
        hparam.active = 3
    message = str(error.value)
    assert "3 is not an allowed size" in message
    assert "blocks.0.fc1.out_features" in message
    assert "[2, 4, 8]" in message
    assert hparam.active == 4  # a rejected value changes nothing


def test_active_error_summarises_long_choice_lists() -> None:
    hparam = Hparam(100, name="wide")
    with pytest.raises(UserInputError, match=r"\[1, 2, \.\.\., 99, 100\] \(100 sizes\)"):
        hparam.active = 0


def test_narrowing_choices_resets_an_active_size_no_longer_allowed() -> None:
    hparam = Hparam(8)
    hparam.active = 3
    hparam.choices = [4, 8]
    assert hparam.active == 8
    hparam.active = 4
    hparam.choices = [2, 4, 8]
    assert hparam.active == 4


def test_divisor_rule() -> None:
    assert ChoiceRule(divisor=4).choices(10) == [4, 8, 10]
    assert ChoiceRule(divisor=4).choices(12) == [4, 8, 12]
    assert ChoiceRule(divisor=32).choices(10) == [10]


def test_ratio_rule_rounds_to_the_divisor() -> None:
    assert ChoiceRule(ratios=(0.25, 0.5, 1.0)).choices(8) == [2, 4, 8]
    assert ChoiceRule(ratios=(0.5,)).choices(8) == [4, 8]  # the full size is always allowed
    assert ChoiceRule(divisor=4, ratios=(0.3, 0.5)).choices(16) == [4, 8, 16]
    assert ChoiceRule(divisor=4, ratios=(0.01,)).choices(16) == [4, 16]  # never below divisor


def test_min_size_rule() -> None:
    assert ChoiceRule(min_size=3).choices(5) == [3, 4, 5]
    assert ChoiceRule(min_size=10).choices(5) == [5]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"divisor": 0}, "divisor must be >= 1, got 0"),
        ({"min_size": -1}, "min_size must be >= 0, got -1"),
        ({"ratios": (0.5, 1.5)}, r"ratio 1.5 is outside \(0, 1\]"),
        ({"ratios": (0.0,)}, r"ratio 0.0 is outside \(0, 1\]"),
    ],
)
def test_bad_rules_are_rejected_with_a_message(kwargs, message) -> None:
    with pytest.raises(UserInputError, match=message):
        ChoiceRule(**kwargs)


@settings(max_examples=60, deadline=None)
@given(
    max_size=st.integers(1, 200),
    divisor=st.integers(1, 64),
    min_size=st.integers(0, 80),
    ratios=st.none() | st.lists(st.floats(0.001, 1.0), min_size=1, max_size=5),
)
def test_rule_choices_are_valid_hparam_choices(max_size, divisor, min_size, ratios) -> None:
    rule = ChoiceRule(
        divisor=divisor, ratios=None if ratios is None else tuple(ratios), min_size=min_size
    )
    choices = rule.choices(max_size)
    assert choices == sorted(set(choices))
    assert choices[-1] == max_size
    for choice in choices[:-1]:
        assert choice % divisor == 0
        assert max(min_size, 1) <= choice < max_size
    assert Hparam(max_size, choices).choices == choices


def test_importance_order_is_descending_and_stable() -> None:
    hparam = Hparam(5, name="h")
    hparam.importance = torch.tensor([0.1, 0.9, 0.5, 0.9, 0.0])
    assert hparam.order.tolist() == [1, 3, 2, 0, 4]


def test_active_slice_keeps_the_top_units_in_original_order() -> None:
    hparam = Hparam(5, name="h")
    hparam.importance = torch.tensor([0.3, 0.9, 0.1, 0.5, 0.2])
    hparam.active = 2
    assert hparam.active_slice.tolist() == [1, 3]
    hparam.active = 3
    assert hparam.active_slice.tolist() == [0, 1, 3]
    hparam.active = 5
    assert hparam.active_slice == slice(0, 5)


def test_active_slice_is_a_prefix_without_or_with_sorted_importance() -> None:
    hparam = Hparam(4)
    hparam.active = 2
    assert hparam.active_slice == slice(0, 2)
    hparam.importance = torch.tensor([4.0, 3.0, 3.0, 1.0])
    assert hparam.active_slice == slice(0, 2)


def test_importance_of_the_wrong_length_is_rejected() -> None:
    hparam = Hparam(4, name="h")
    with pytest.raises(ValueError, match="'h' has 4 units but got 3 scores"):
        hparam.importance = torch.ones(3)


@settings(max_examples=40, deadline=None)
@given(
    scores=st.lists(st.integers(-5, 5), min_size=1, max_size=12, unique=True),
    data=st.data(),
)
def test_active_slice_selects_exactly_the_k_most_important(scores, data) -> None:
    hparam = Hparam(len(scores))
    hparam.importance = torch.tensor(scores, dtype=torch.float32)
    k = data.draw(st.integers(1, len(scores)))
    hparam.active = k
    kept = torch.arange(len(scores))[hparam.active_slice].tolist()
    top = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
    assert kept == sorted(top)


def test_rules_narrow_the_choices_of_matching_hparams() -> None:
    model = seeded(MLP, 4, [8, 12], 2)
    space = convert(model, rules={"layers.0.*": {"divisor": 4}, "*": ChoiceRule(ratios=(0.5,))})
    assert space.all_hparams["layers.0.out_features"].choices == [4, 8]
    assert space.all_hparams["layers.1.out_features"].choices == [6, 12]


def test_a_rule_allowing_only_the_full_size_hides_the_hparam_from_the_search() -> None:
    space = convert(seeded(MLP, 4, [8, 12], 2), rules={"layers.1.*": {"min_size": 99}})
    assert "layers.1.out_features" in space.all_hparams
    assert list(space.hparams) == ["layers.0.out_features"]
    assert space.config() == {"layers.0.out_features": 8}


def test_unknown_rule_key_lists_the_valid_keys() -> None:
    with pytest.raises(UserInputError) as error:
        convert(seeded(MLP, 4, [8], 2), rules={"*": {"divisr": 4}})
    message = str(error.value)
    assert "divisr" in message and "'*'" in message
    assert "divisor, min_size, ratios" in message


def test_select_validates_names_and_sizes_before_changing_anything() -> None:
    space = convert(seeded(MLP, 4, [8, 12], 2))
    with pytest.raises(UserInputError) as error:
        space.select({"layers.0.out_features": 4, "nope": 3})
    assert "unknown hparam(s) nope" in str(error.value)
    assert "layers.0.out_features, layers.1.out_features" in str(error.value)
    with pytest.raises(UserInputError, match="13 is not an allowed size"):
        space.select({"layers.0.out_features": 4, "layers.1.out_features": 13})
    assert space.config() == space.max_config()  # nothing was half applied
