"""Bugs found in review, each with the test that would have caught it."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import nasframe
import nasframe.modules.attention
from nasframe import UserInputError, convert, export
from nasframe.cost.cost_model import CostModel
from nasframe.searchers.allocation import monotone_degradation, threshold_allocation
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


class _TiedAcrossStreams(nn.Module):
    """An input embedding tied to a head that reads another stream of the same width."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.enc = nn.Embedding(20, 8), nn.Linear(8, 6)
        self.proj, self.head = nn.Linear(6, 8), nn.Linear(8, 20, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.proj(torch.relu(self.enc(self.emb(ids))))))


def test_a_weight_tied_across_unconnected_dimensions_stays_whole() -> None:
    torch.manual_seed(0)
    model = _TiedAcrossStreams()
    reference = copy.deepcopy(model)
    space = convert(model)
    assert list(space.hparams) == ["enc.out_features"]
    for hparam in space.all_hparams.values():
        hparam.importance = torch.rand(hparam.max, generator=torch.Generator().manual_seed(3))
    space.sort_parameters()
    ids = torch.randint(0, 20, (3, 4))
    torch.testing.assert_close(model(ids), reference(ids), atol=1e-6, rtol=0)
    space.select({"enc.out_features": 3})
    exported = export(space)
    assert CostModel(space).params() == sum(p.numel() for p in exported.parameters())


def test_nan_degradations_are_never_chosen() -> None:
    assert monotone_degradation({4: 0.0, 3: float("nan"), 2: 0.1}) == {
        4: 0.0,
        3: float("inf"),
        2: float("inf"),
    }
    sensitivity = {"a": {4: 0.0, 2: float("nan")}, "b": {4: 0.0, 2: 0.5}}
    config = threshold_allocation(sensitivity, lambda c: c["a"] + c["b"], limit=6)
    assert config == {"a": 4, "b": 2}
    with pytest.raises(ValueError):
        threshold_allocation(sensitivity, lambda c: c["a"] + c["b"], limit=4)


def test_fastnas_never_selects_a_size_whose_score_is_nan() -> None:
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
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 4))
    config = {"score_func": lambda m: float("nan"), "verbose": False}
    with pytest.raises(UserInputError, match="score_func returned nan for the full model"):
        nasframe.search(model, "params=70%", algorithm="fastnas", config=config)


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
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 4))
    with pytest.raises(UserInputError, match=words):
        convert(model, {"*": rule})


class _AttentionLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.head = nn.Linear(16, 50)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.emb(ids)
        return self.head(x + self.attn(x, x, x, attn_mask=mask, need_weights=False)[0])


def test_exported_heads_keep_their_original_order_for_per_head_masks() -> None:
    torch.manual_seed(0)
    model = _AttentionLM().eval()
    reference = copy.deepcopy(model)
    space = convert(model)
    space.hparams["attn.num_heads"].importance = torch.tensor([0.1, 3.0, 2.0, 1.0])
    space.sort_parameters()
    ids = torch.randint(0, 50, (2, 5))
    mask = torch.zeros(2 * 4, 5, 5)  # (batch * heads, target, source), original head order
    mask[0, :, 3] = float("-inf")
    mask[1:4, :, 2] = float("-inf")
    with torch.no_grad():
        expected = reference(ids, mask)
        torch.testing.assert_close(export(space).eval()(ids, mask), expected, atol=1e-5, rtol=0)
        space.select({"attn.num_heads": 3})  # keeps original heads 1, 2, 3, in that order
        kept_mask = mask.view(2, 4, 5, 5)[:, [1, 2, 3]].reshape(6, 5, 5)
        torch.testing.assert_close(
            export(space).eval()(ids, kept_mask), model(ids, mask), atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_dynamic_attention_accepts_unbatched_input(batch_first: bool, need_weights: bool) -> None:
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    dynamic = nasframe.modules.attention.DynamicMultiheadAttention.convert(copy.deepcopy(attention))
    x = torch.randn(5, 16)
    padding = torch.tensor([False, False, False, True, False])
    with torch.no_grad():
        expected = attention(x, x, x, key_padding_mask=padding, need_weights=need_weights)
        got = dynamic(x, x, x, key_padding_mask=padding, need_weights=need_weights)
    torch.testing.assert_close(got[0], expected[0], atol=1e-6, rtol=0)
    if need_weights:
        torch.testing.assert_close(got[1], expected[1], atol=1e-6, rtol=0)
