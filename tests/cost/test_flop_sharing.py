"""The FLOP fit shares one polynomial among identical modules (a transformer's layers): a
deep model is determined by a few measured configs, and its predictions still equal the
counts; identical-looking modules whose FLOPs differ are fitted one by one."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import nasframe.cost.flop_model as flop_model
from nasframe.api import convert
from nasframe.cost.cost_model import CostModel

transformers = pytest.importorskip("transformers")


def _counting_measurements(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    measure = flop_model.measure_flops

    def counted(*args, **kwargs):
        calls.append(1)
        return measure(*args, **kwargs)

    monkeypatch.setattr(flop_model, "measure_flops", counted)
    return calls


def _assert_predictions_are_counts(space, x, seed: int = 3, configs: int = 5) -> None:
    costs = CostModel(space, x)
    rng = random.Random(seed)
    for _ in range(configs):
        config = {name: rng.choice(hp.choices) for name, hp in space.hparams.items()}
        assert costs.flops(config) == costs.measure_flops(config)


def test_a_deep_llama_is_fitted_exactly_from_a_few_forwards(monkeypatch) -> None:
    """Six layers with depth searched: a layer is present in few random configs, so fitting
    each module alone ran out of configs (78 forwards, then every prediction measured)."""
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    space = convert(transformers.LlamaForCausalLM(config).eval())
    x = torch.randint(0, 64, (1, 9), generator=torch.Generator().manual_seed(0))
    calls = _counting_measurements(monkeypatch)
    fitted = flop_model.FlopModel(space, x)
    assert fitted.exact
    assert len(calls) <= 12
    layers = [name for name, _ in fitted.modules if name.startswith("model.layers.")]
    shared = {name.split(".", 3)[-1]: fitted.terms[name] for name in layers}
    for name in layers:  # every layer's module has its counterpart's coefficients
        assert torch.equal(fitted.terms[name], shared[name.split(".", 3)[-1]])
    monkeypatch.undo()
    _assert_predictions_are_counts(space, x)


class TwiceAndOnce(nn.Module):
    """Two Linears of one shape with prunable widths: ``a`` runs twice, ``b`` once."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.head = nn.Linear(4, 6), nn.Linear(6, 2)
        self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.b(self.a(self.a(self.first(x)))))


def test_identical_looking_modules_with_other_flops_are_fitted_apart() -> None:
    torch.manual_seed(0)
    space = convert(TwiceAndOnce())
    x = torch.randn(3, 4)
    fitted = flop_model.FlopModel(space, x)
    assert fitted.exact
    assert torch.allclose(fitted.terms["a"], 2 * fitted.terms["b"])
    _assert_predictions_are_counts(space, x)
