"""``convert``: bugs found in review, each with the test that would have caught it (a module
reachable under two names, a subclass with its own forward, wrongly typed rule values)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from nasframe import UserInputError, convert, export
from nasframe.space.dynamic import DynamicModule


class _Sub(nn.Module):
    def __init__(self, fc: nn.Linear) -> None:
        super().__init__()
        self.fc = fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class _SharedUnderTwoNames(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(8, 16)
        fc = nn.Linear(16, 16)
        self.a, self.b = _Sub(fc), _Sub(fc)
        self.down = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.b(torch.relu(self.a(torch.relu(self.up(x))))))


def test_a_module_reachable_under_two_names_is_converted_and_exported_under_both() -> None:
    """Regression (found in review): a module reachable under two names was converted, or
    exported, under only one of them, so the two names no longer held the same module."""
    torch.manual_seed(0)
    model = _SharedUnderTwoNames()
    space = convert(model)
    assert model.a.fc is model.b.fc and isinstance(model.b.fc, DynamicModule)
    space.select({"up.out_features": 9})
    x = torch.randn(2, 8)
    exported = export(space)
    assert exported.a.fc is exported.b.fc
    assert not any(isinstance(m, DynamicModule) for m in exported.modules())
    torch.testing.assert_close(exported(x), model(x), atol=1e-6, rtol=0)


class _ScaledLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * F.linear(x, self.weight, self.bias)


def test_a_subclass_with_its_own_forward_stays_plain_and_unchanged() -> None:
    """Regression (found in review): a subclass of nn.Linear with its own forward was converted
    like a plain Linear, which replaced its forward and changed what it computes."""
    torch.manual_seed(0)
    model = nn.Sequential(_ScaledLinear(4, 8), nn.ReLU(), _ScaledLinear(8, 3))
    reference = copy.deepcopy(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        space = convert(model)
    assert not space.hparams  # nothing is half understood, so nothing is searchable
    assert any("_ScaledLinear" in str(w.message) for w in caught)
    x = torch.randn(2, 4)
    torch.testing.assert_close(model(x), reference(x), atol=0, rtol=0)


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ({"divisor": 2.5}, "divisor must be a whole number"),
        ({"divisor": "8"}, "divisor must be a whole number"),
        ({"min_size": 2.5}, "min_size must be a whole number"),
        ({"ratios": 0.5}, "ratios in the rule for '\\*' must be a list"),
        ({"ratios": [0.5, "x"]}, "ratios must be a list of numbers"),
    ],
)
def test_wrongly_typed_rule_values_name_the_problem(rule: dict, words: str) -> None:
    """Regression (found in review): rule values of the wrong type (a fractional or string
    divisor, a bare number for ratios) were not refused with a message naming the value."""
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 4))
    with pytest.raises(UserInputError, match=words):
        convert(model, {"*": rule})
