"""gradnas searches: which units it prunes, which hparams it can search, what it returns."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from gradnas.searcher import GradientBinarySearcher
from gradnas_models import (
    MLP,
    AttentionLM,
    ChainWithProjections,
    ProjectionPlugin,
    no_hooks_left,
    regression_batches,
    squared_error,
    token_batches,
    token_loss,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nasframe.api
from nasframe.api import convert, export
from nasframe.cost.cost_model import CostModel
from nasframe.plugins import get_plugin_manager

HIDDEN = "fc1.out_features"


def _search(model: nn.Module, constraint: str, data_loader, loss_func=squared_error, **config):
    space = convert(model)
    searcher = GradientBinarySearcher()
    config = {"data_loader": data_loader, "loss_func": loss_func, "verbose": False, **config}
    return space, searcher.search(space, constraint, config=config)


def _mlp_params(d: int, hidden: int, out: int) -> int:
    return d * hidden + hidden + hidden * out + out


def _column_keys(weight: torch.Tensor) -> set[tuple[float, ...]]:
    return {tuple(column.tolist()) for column in weight.t()}


# --- which units are pruned ------------------------------------------------------------------


def test_a_unit_the_loss_does_not_depend_on_scores_zero_and_is_pruned_first() -> None:
    torch.manual_seed(0)
    model = MLP(d=5, hidden=6, out=3, act=nn.GELU())
    with torch.no_grad():
        model.fc2.weight[:, 4] = 0.0  # unit 4's output goes nowhere
    original_fc1 = model.fc1.weight.detach().clone()
    space, result = _search(model, f"params={_mlp_params(5, 5, 3)}", regression_batches(3))
    scores = result.importance[HIDDEN]
    assert scores[4].item() == 0.0 and (scores[[0, 1, 2, 3, 5]] > 0).all()
    assert result.config == {HIDDEN: 5}
    pruned = export(space)
    kept_rows = {tuple(row.tolist()) for row in pruned.fc1.weight}
    assert kept_rows == {tuple(original_fc1[i].tolist()) for i in (0, 1, 2, 3, 5)}


@settings(max_examples=12, deadline=None)
@given(
    hidden=st.integers(3, 12),
    d=st.integers(1, 5),
    out=st.integers(1, 4),
    data=st.data(),
)
def test_units_with_zero_output_weights_are_pruned_before_any_other(
    hidden: int, d: int, out: int, data: st.DataObject
) -> None:
    planted = data.draw(
        st.sets(st.integers(0, hidden - 1), min_size=1, max_size=hidden - 1), label="planted"
    )
    seed = data.draw(st.integers(0, 2**16), label="seed")
    torch.manual_seed(seed)
    model = MLP(d=d, hidden=hidden, out=out, act=nn.Tanh())
    with torch.no_grad():
        model.fc2.weight[:, sorted(planted)] = 0.0
        model.fc2.weight[:, [j for j in range(hidden) if j not in planted]] += 0.5  # nonzero
    keep = hidden - len(planted)
    kept_columns = _column_keys(
        model.fc2.weight.detach()[:, [j not in planted for j in range(hidden)]]
    )

    batches = regression_batches(2, d=d, out=out, seed=seed)
    space, result = _search(model, f"params={_mlp_params(d, keep, out)}", batches)

    scores = result.importance[HIDDEN]
    assert all(scores[j].item() == 0.0 for j in planted)
    assert all(scores[j].item() > 0.0 for j in range(hidden) if j not in planted)
    assert result.config == {HIDDEN: keep}
    pruned = export(space)
    assert _column_keys(pruned.fc2.weight.detach()) == kept_columns
    assert (pruned.fc2.weight.abs().sum(dim=0) > 0).all()


# --- attention heads ---------------------------------------------------------------------------


@pytest.mark.parametrize("need_weights", [False, True], ids=["sdpa", "explicit-softmax"])
def test_attention_heads_get_distinct_scores_and_the_search_meets_its_constraint(
    need_weights: bool,
) -> None:
    torch.manual_seed(0)
    model = AttentionLM(vocab=11, dim=8, heads=4, need_weights=need_weights)
    ids = token_batches(4)
    space, result = _search(model, "params=75%", ids, loss_func=token_loss)
    heads = result.importance["attn.num_heads"]
    assert heads.shape == (4,) and len(set(heads.tolist())) == 4 and (heads > 0).all()
    assert "emb.embedding_dim" in result.importance  # the residual, through the head's input
    assert result.cost_after <= result.limit == pytest.approx(0.75 * result.cost_before)
    assert CostModel(space).params() <= result.limit
    pruned = export(space)
    assert sum(p.numel() for p in pruned.parameters()) <= result.limit
    with torch.no_grad():
        torch.testing.assert_close(pruned(ids[0]), model(ids[0]))
    assert no_hooks_left(model)


def test_pruned_heads_are_the_lowest_scored_ones() -> None:
    torch.manual_seed(1)
    model = AttentionLM(vocab=11, dim=8, heads=4)
    with torch.no_grad():  # head 2 contributes nothing to the output
        model.attn.out_proj.weight[:, 4:6] = 0.0
    space, result = _search(
        model,
        "params=100%",
        token_batches(3),
        loss_func=token_loss,
    )
    heads = result.importance["attn.num_heads"]
    assert heads[2].item() == 0.0 and (heads[[0, 1, 3]] > 0).all()
    space.select({"attn.num_heads": 3})
    # after sorting, the kept prefix of out_proj's columns holds no zero head
    kept = model.attn.sliced("out_proj.weight")
    assert kept.shape == (8, 6) and (kept.abs().sum(dim=0) > 0).all()


# --- precision ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_get_fp32_scores(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = AttentionLM(vocab=11, dim=8, heads=4).to(dtype)
    try:
        model(token_batches(1)[0])
    except RuntimeError as error:  # an older CPU build without half-precision matmul
        pytest.skip(f"{dtype} is not supported on this CPU: {error}")
    space, result = _search(model, "params=80%", token_batches(3), loss_func=token_loss)
    for name, scores in result.importance.items():
        assert scores.dtype == torch.float32, name
        assert torch.isfinite(scores).all() and (scores > 0).any(), name
    assert result.cost_after <= result.limit
    assert all(p.dtype == dtype for p in model.parameters())


# --- which hparams gradnas searches ----------------------------------------------------------


@pytest.fixture
def projection_plugin():
    """Registers the Projection module type (a dynamic version, but no gradient setup)."""
    manager = get_plugin_manager()
    plugin = ProjectionPlugin()
    manager.register(plugin, name="test-projection")
    try:
        yield
    finally:
        manager.unregister(plugin)


def _gradient_setup_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "no gradient setup" in str(w.message)]


def test_hparams_without_a_gradient_setup_stay_full_with_one_warning(projection_plugin) -> None:
    torch.manual_seed(0)
    model = ChainWithProjections(d=4, h0=6, h1=5, h2=4, out=3)
    batches = regression_batches(3, d=4, out=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        space, result = _search(model, "params=90%", batches)
    assert set(space.hparams) == {"fc0.out_features", "fc1.out_features", "projA.out_features"}
    messages = _gradient_setup_warnings(caught)
    assert len(messages) == 1
    assert "fc1.out_features" in messages[0] and "projA.out_features" in messages[0]
    assert "fc0.out_features" not in messages[0] and "full size" in messages[0]
    assert set(result.importance) == {"fc0.out_features"}
    assert result.config["fc1.out_features"] == 5 and result.config["projA.out_features"] == 4
    assert result.config["fc0.out_features"] < 6
    assert result.cost_after <= result.limit


def test_hparam_names_for_search_lists_only_scorable_hparams(projection_plugin) -> None:
    space = convert(ChainWithProjections())
    searcher = GradientBinarySearcher()
    searcher.space = space
    with pytest.warns(UserWarning, match="no gradient setup") as caught:
        assert searcher.hparam_names_for_search() == ["fc0.out_features"]
    assert len(_gradient_setup_warnings(list(caught))) == 1
    assert no_hooks_left(space.model)  # asking attached nothing


def test_no_warning_when_every_hparam_is_scorable() -> None:
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _search(MLP(), "params=70%", regression_batches(2))
    assert _gradient_setup_warnings(caught) == []


# --- gradnas_score_func ----------------------------------------------------------------------


def test_gradnas_score_func_is_minus_the_score_mass_of_the_pruned_units() -> None:
    torch.manual_seed(0)
    model = AttentionLM(vocab=11, dim=8, heads=4)
    space = convert(model)
    heads, width = space.hparams["attn.num_heads"], space.hparams["emb.embedding_dim"]
    heads.importance = torch.tensor([3.0, 0.5, 2.0, 1.0])
    width.importance = torch.arange(8.0)
    score = GradientBinarySearcher.gradnas_score_func
    assert score(model) == 0.0
    heads.active = 2  # keeps heads 0 and 2, prunes 0.5 + 1.0
    assert score(model) == pytest.approx(-1.5)
    width.active = 5  # keeps units 3..7, prunes 0 + 1 + 2
    assert score(model) == pytest.approx(-4.5)
    heads.active = 4
    assert score(model) == pytest.approx(-3.0)


def test_sensitivities_are_the_pruned_score_mass_for_every_choice() -> None:
    torch.manual_seed(0)
    _, result = _search(MLP(d=5, hidden=6, out=3), "params=60%", regression_batches(3))
    ordered = torch.sort(result.importance[HIDDEN], descending=True).values
    for kept, degradation in result.sensitivity[HIDDEN].items():
        assert degradation == pytest.approx(float(ordered[kept:].sum()), rel=1e-5, abs=1e-12)


def test_sensitivity_read_off_the_scores_equals_evaluating_gradnas_score_func() -> None:
    """gradnas's sensitivity skips the model walk; it must give what evaluating
    gradnas_score_func on the pruned model (the seed's definition) gives."""
    from nasframe.searchers.binary import BinarySearcher

    torch.manual_seed(0)
    model = AttentionLM(vocab=11, dim=8, heads=4)
    space = convert(model)
    generator = torch.Generator().manual_seed(4)
    for hparam in space.hparams.values():
        hparam.importance = torch.rand(hparam.max, generator=generator)
    searcher = GradientBinarySearcher()
    searcher.space = space
    for name in space.hparams:
        fast = searcher.compute_sensitivity(name)
        walked = BinarySearcher.compute_sensitivity(searcher, name)
        assert fast.keys() == walked.keys()
        for size, value in fast.items():
            assert value == pytest.approx(walked[size], rel=1e-6, abs=1e-9)


# --- through the public entry point ----------------------------------------------------------


def test_nasframe_search_uses_gradnas_by_default() -> None:
    torch.manual_seed(0)
    model = MLP(d=5, hidden=8, out=3)
    reference = copy.deepcopy(model)
    x = regression_batches(1)[0][0]
    space, result = nasframe.api.search(
        model,
        "params=50%",
        config={"data_loader": regression_batches(2), "loss_func": squared_error, "verbose": False},
    )
    assert set(result.importance) == {HIDDEN}
    assert result.cost_after <= result.limit
    space.select(space.max_config())
    with torch.no_grad():  # sorting units by importance does not change the full model
        torch.testing.assert_close(model(x), reference(x))
