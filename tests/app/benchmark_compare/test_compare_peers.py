"""The peers of ``benchmarks/smollm2_compare.py`` on tiny random Llamas (never SmolLM2): the
FLAP-style baseline meets its budget and its bias compensation is exact where the removed
channels are constant; the Torch-Pruning runner prunes to the budget and keeps the forward
running."""

from __future__ import annotations

import copy
import importlib.util
import sys

import pytest
import torch
from compare_script import compare  # noqa: F401 - loads the benchmark's package
from torch import nn

flap = sys.modules["compare.peers.flap"]
tp_runner = sys.modules["compare.peers.torch_pruning_runner"]

transformers = pytest.importorskip("transformers")


def _llama(mlp_bias: bool = False, seed: int = 0) -> nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=96,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=16,
        mlp_bias=mlp_bias,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def _batches(count: int = 2) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(0, 64, (2, 17), generator=generator) for _ in range(count)]


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- FLAP


@pytest.mark.parametrize("budget", [0.9, 0.8, 0.7])
def test_flap_meets_its_budget_and_runs(budget, one_thread):
    model, batches = _llama(), _batches()
    stats = flap.collect_input_stats(model, batches)
    units = flap.flap_units(model, stats)
    limit = budget * _params(model)
    plan = flap.plan_pruning(model, units, limit)
    pruned = copy.deepcopy(model)
    kept = flap.apply_plan(pruned, plan, stats)
    assert _params(pruned) == plan.params_after <= limit
    assert _params(pruned) > limit - max(u.params for u in units) - 2 * 96  # not far below
    assert kept["ffn_widths"] == [layer.mlp.down_proj.in_features for layer in pruned.model.layers]
    logits = pruned(batches[0]).logits
    assert logits.shape == (2, 17, 64) and torch.isfinite(logits).all()
    # every pruned projection got its compensation bias; untouched ones have none
    for index, layer in enumerate(pruned.model.layers):
        assert (layer.mlp.down_proj.bias is not None) == bool(plan.removed_channels.get(index))
        assert (layer.self_attn.o_proj.bias is not None) == bool(plan.removed_groups.get(index))


def test_flap_scores_rank_within_each_layer_and_kind():
    model, batches = _llama(), _batches()
    units = flap.flap_units(model, flap.collect_input_stats(model, batches))
    for layer in range(2):
        for kind, count in ((flap.ATTENTION, 2), (flap.FFN, 128)):
            scores = torch.tensor([u.score for u in units if (u.layer, u.kind) == (layer, kind)])
            assert len(scores) == count
            if kind == flap.FFN:  # standardised over the layer's channels
                assert scores.mean().abs() < 1e-6 and scores.std() == pytest.approx(1, abs=1e-6)


def test_compensation_is_exact_for_a_linear_map_with_constant_removed_inputs():
    torch.manual_seed(0)
    linear = nn.Linear(8, 5)
    x = torch.randn(20, 8)
    x[:, [1, 4, 6]] = torch.tensor([0.5, -2.0, 3.0])
    kept = torch.tensor([0, 2, 3, 5, 7])
    compensated = flap.compensate(linear, kept, torch.tensor([0.5, -2.0, 3.0]))
    assert compensated.in_features == 5
    torch.testing.assert_close(compensated(x[:, kept]), linear(x), rtol=0, atol=1e-5)


def test_flap_bias_compensation_is_exact_where_the_removed_channels_are_constant(one_thread):
    """FFN channels whose gate and up rows are zero (their biases not) feed down_proj a
    constant: removing them with their mean folded into a bias changes no logit."""
    model = _llama(mlp_bias=True)
    constant = {0: [3, 7, 50], 1: [0, 127]}
    with torch.no_grad():
        for layer, channels in constant.items():
            mlp = model.model.layers[layer].mlp
            mlp.gate_proj.weight[channels] = 0
            mlp.up_proj.weight[channels] = 0
            mlp.gate_proj.bias[channels] = 1.5
            mlp.up_proj.bias[channels] = -0.75
    batches = _batches()
    stats = flap.collect_input_stats(model, batches)
    for layer, channels in constant.items():  # the metric sees them as not fluctuating
        assert stats[(layer, flap.FFN)].variance[channels].max() < 1e-10
    plan = flap.FlapPlan(removed_channels={k: list(v) for k, v in constant.items()})
    pruned = copy.deepcopy(model)
    flap.apply_plan(pruned, plan, stats)
    assert [layer.mlp.down_proj.in_features for layer in pruned.model.layers] == [125, 126]
    with torch.no_grad():
        for batch in batches + _batches(3)[2:]:
            torch.testing.assert_close(
                pruned(batch).logits, model(batch).logits, rtol=1e-4, atol=1e-4
            )
    # and the search ranks them first: their scores are their layer's lowest
    units = flap.flap_units(model, stats)
    for layer, channels in constant.items():
        ffn = [u for u in units if u.kind == flap.FFN and u.layer == layer]
        lowest = sorted(ffn, key=lambda u: u.score)[: len(channels)]
        assert {u.index for u in lowest} == set(channels)


# --------------------------------------------------------------------------- Torch-Pruning


@pytest.mark.skipif(
    importlib.util.find_spec("torch_pruning") is None,
    reason="torch_pruning is not installed (CI installs .[dev]; pip install -e .[bench])",
)
@pytest.mark.parametrize("budget", [0.9, 0.75])
def test_torch_pruning_prunes_a_tiny_llama_to_the_budget(budget, one_thread):
    model, batches = _llama(), _batches()
    limit = budget * _params(model)
    pruned, info = tp_runner.prune_all(model, batches, tp_runner.IMPORTANCES, limit, 8)
    for kind in tp_runner.IMPORTANCES:
        candidate = pruned[kind]
        assert _params(candidate) <= limit
        kept = tp_runner.describe_pruned(candidate)
        assert kept["hidden_size"] == 96  # the residual width is kept whole
        assert kept["query_heads"] == [6, 6] and kept["kv_heads"] == [2, 2]
        assert all(width % 8 == 0 and width < 128 for width in kept["ffn_widths"])
        tp_runner.check_forward(candidate, batches[0])
        assert 0 < info[kind]["ratio"] < 1
    assert _params(model) == _params(_llama())  # the model itself is untouched


@pytest.mark.skipif(
    importlib.util.find_spec("torch_pruning") is None,
    reason="torch_pruning is not installed (CI installs .[dev]; pip install -e .[bench])",
)
def test_torch_pruning_gradients_are_per_sequence_moments(one_thread):
    model, batches = _llama(), _batches(1)
    total, squares, rows = tp_runner.gradient_moments(copy.deepcopy(model), batches)
    assert rows == 2
    name = "model.layers.0.mlp.down_proj.weight"
    torch.testing.assert_close(squares[name] >= 0, torch.ones_like(squares[name], dtype=bool))
    assert not torch.allclose(squares[name], total[name] * total[name] / rows)  # two samples
    candidate = copy.deepcopy(model)
    tp_runner.set_gradients(candidate, tp_runner.HESSIAN, (total, squares, rows))
    torch.testing.assert_close(candidate.get_parameter(name).grad, squares[name] / rows)
    tp_runner.set_gradients(candidate, tp_runner.TAYLOR, (total, squares, rows))
    torch.testing.assert_close(candidate.get_parameter(name).grad, total[name])
