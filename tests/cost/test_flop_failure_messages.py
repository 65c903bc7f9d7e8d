"""``measure_flops`` tells a dummy input the model rejects from a model that crashes when
pruned: the first is the input's fault (its shape is named), the second the forward's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nasframe import convert
from nasframe.cost.flop_model import measure_flops
from nasframe.errors import UserInputError


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def hard_coded_width_space():
    """A space whose model crashes once ``fc1``'s width is pruned, as a forward that hard-codes
    a width would (a hook after conversion, since tracing refuses such a forward): the
    dummy input is not at fault."""
    space = convert(MLP().eval())

    def expect_eight(_: nn.Module, args: tuple) -> None:
        if args[0].shape[-1] != 8:
            raise RuntimeError(f"shape '[-1, 2, 4]' is invalid for {args[0].shape[-1]} features")

    space.model.fc2.register_forward_pre_hook(expect_eight)
    return space


def test_a_model_that_crashes_only_when_pruned_is_not_blamed_on_the_input() -> None:
    space = hard_coded_width_space()
    x = torch.randn(3, 4)
    total, _ = measure_flops(space, space.max_config(), x)  # the input fits
    assert total > 0
    with pytest.raises(UserInputError) as caught:
        measure_flops(space, {"fc1.out_features": 5}, x)
    message = str(caught.value)
    assert "does not fit" not in message
    assert message.startswith("the model runs on the dummy input at its full size but crashes")
    assert "fc1.out_features=5" in message and "RuntimeError" in message
    assert space.config() == space.max_config()  # restored


def test_an_input_of_the_wrong_shape_is_reported_as_not_fitting_with_its_shape() -> None:
    space = hard_coded_width_space()
    bad = torch.randn(3, 5)
    for config in (space.max_config(), {"fc1.out_features": 5}):
        with pytest.raises(UserInputError) as caught:
            measure_flops(space, config, bad)
        message = str(caught.value)
        assert message.startswith("the dummy input does not fit the model"), message
        assert "float32 tensor of shape (3, 5)" in message


def test_an_input_of_the_wrong_type_is_reported_as_not_fitting() -> None:
    space = hard_coded_width_space()
    with pytest.raises(UserInputError, match=r"does not fit the model.*\(a str, a str\)"):
        measure_flops(space, space.max_config(), ("a", "b"))


def test_a_model_that_fails_unpruned_names_the_input_and_the_error() -> None:
    space = convert(MLP().eval())

    def boom(_: nn.Module, __: tuple) -> None:
        raise ValueError("boom")

    space.model.fc2.register_forward_pre_hook(boom)  # the forward fails on any input
    with pytest.raises(UserInputError) as caught:
        measure_flops(space, {"fc1.out_features": 5}, torch.randn(3, 4))
    message = str(caught.value)
    assert message.startswith("the dummy input does not fit the model: the unpruned model fails")
    assert "ValueError: boom" in message and "check that model(dummy_input) runs" in message
