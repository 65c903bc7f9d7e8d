"""fastnas and scores that are not finite: bugs found in review, each with the test that would
have caught it."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import nasframe
from nasframe import UserInputError


def test_fastnas_never_selects_a_size_whose_score_is_nan() -> None:
    """Regression (found in review): fastnas could select a size whose score was NaN."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)
    )
    x, target = torch.randn(16, 4), torch.randn(16, 4)

    def score(m: nn.Module) -> float:
        if m[0].get_hparam("out_features").active < 12:
            return float("nan")
        with torch.no_grad():
            return -float(F.mse_loss(m(x), target))

    space, result = nasframe.search(
        model, "params=70%", algorithm="fastnas", config={"score_func": score, "verbose": False}
    )
    assert result.config["0.out_features"] >= 12
    assert math.isfinite(score(model))


def test_a_non_finite_full_model_score_is_a_clear_error() -> None:
    """Regression (found in review): a score_func returning NaN for the full model gave no
    clear error naming it."""
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 4))
    config = {"score_func": lambda m: float("nan"), "verbose": False}
    with pytest.raises(UserInputError, match="score_func returned nan for the full model"):
        nasframe.search(model, "params=70%", algorithm="fastnas", config=config)
