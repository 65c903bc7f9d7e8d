"""The gradnas scoring pass: which batches it uses, what it sums, and what it leaves behind."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from gradnas.searcher import GradientBinarySearcher
from gradnas.setups import setup_attention_heads, setup_linear_input
from gradnas_models import (
    MLP,
    CountingLoader,
    DynamicProjection,
    no_hooks_left,
    regression_batches,
    squared_error,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nasframe.api import convert
from nasframe.errors import UserInputError
from nasframe.modules.attention import DynamicMultiheadAttention
from nasframe.modules.linear import DynamicLinear

HIDDEN = "fc1.out_features"


def _mlp(seed: int = 0, dtype=torch.float32, act: nn.Module | None = None) -> MLP:
    torch.manual_seed(seed)
    return MLP(d=5, hidden=7, out=3, act=act).to(dtype)


def _scores(model: nn.Module, constraint: str = "params=100%", **config):
    """Run a gradnas search on ``model`` (converted in place); its searcher and result."""
    space = convert(model)
    searcher = GradientBinarySearcher()
    config = {"loss_func": squared_error, "verbose": False, **config}
    result = searcher.search(space, constraint, config=config)
    return searcher, result


def _analytic_score(reference: MLP, batches) -> torch.Tensor:
    """Sum over batches of (sum over rows/positions of a_j * dL/da_j) ** 2."""
    total = torch.zeros(reference.fc1.out_features, dtype=torch.float64)
    with torch.no_grad():
        for x, target in batches:
            a = reference.act(reference.fc1(x))
            dl_da = (reference.fc2(a) - target) @ reference.fc2.weight
            total += (a * dl_da).sum(dim=(0, 1)).double() ** 2
    return total


def test_importance_is_the_sum_over_batches_of_squared_mask_gradients() -> None:
    model = _mlp(dtype=torch.float64)
    reference = copy.deepcopy(model)
    batches = [(x.double(), t.double()) for x, t in regression_batches(5)]
    searcher, result = _scores(model, data_loader=batches)
    expected = _analytic_score(reference, batches)
    torch.testing.assert_close(result.importance[HIDDEN].double(), expected, rtol=1e-5, atol=0)
    assert result.importance[HIDDEN].dtype == torch.float32
    assert searcher.num_batches == 5 and not searcher.stopped_early


@settings(max_examples=8, deadline=None)
@given(order=st.permutations(range(6)))
def test_scores_do_not_depend_on_batch_order(order: list[int]) -> None:
    batches = regression_batches(6, seed=2)
    _, in_order = _scores(_mlp(), data_loader=batches)
    _, shuffled = _scores(_mlp(), data_loader=[batches[i] for i in order])
    torch.testing.assert_close(shuffled.importance[HIDDEN], in_order.importance[HIDDEN])


def test_averaged_scores_are_the_sums_divided_by_the_number_of_batches() -> None:
    batches = regression_batches(6, seed=3)
    _, summed = _scores(_mlp(), data_loader=batches)
    _, averaged = _scores(_mlp(), data_loader=batches, average_scores=True)
    torch.testing.assert_close(averaged.importance[HIDDEN] * 6, summed.importance[HIDDEN])
    assert not torch.equal(averaged.importance[HIDDEN], summed.importance[HIDDEN])


# --- how many batches are used ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("patience", "min_batches", "expected"),
    [(3, 2, 4), (3, 10, 10), (1, 1, 2), (5, 6, 6)],
)
def test_identical_batches_stop_early_after_patience_and_min_batches(
    patience: int, min_batches: int, expected: int
) -> None:
    """The mean score never changes, so scoring stops at max(min_batches, patience + 1)."""
    loader = CountingLoader(regression_batches(1), repeat_forever=True)
    searcher, result = _scores(
        _mlp(),
        data_loader=loader,
        max_iter_data_loader=50,
        convergence_tol=1e-3,
        convergence_patience=patience,
        convergence_min_batches=min_batches,
        average_scores=True,
    )
    assert loader.drawn == expected == searcher.num_batches
    assert searcher.stopped_early
    _, one = _scores(_mlp(), data_loader=regression_batches(1))
    torch.testing.assert_close(result.importance[HIDDEN], one.importance[HIDDEN])


def test_scores_that_keep_moving_use_every_batch() -> None:
    loader = CountingLoader(regression_batches(12, seed=4))
    searcher, _ = _scores(
        _mlp(),
        data_loader=loader,
        convergence_tol=1e-12,
        convergence_patience=1,
        convergence_min_batches=1,
    )
    assert loader.drawn == 12 == searcher.num_batches and not searcher.stopped_early


def test_without_a_tolerance_scoring_never_stops_early() -> None:
    loader = CountingLoader(regression_batches(1), repeat_forever=True)
    searcher, _ = _scores(_mlp(), data_loader=loader, max_iter_data_loader=20)
    assert loader.drawn == 20 and not searcher.stopped_early


@pytest.mark.parametrize("limit", [1, 3, 17])
def test_max_iter_data_loader_uses_exactly_that_many_batches(limit: int) -> None:
    loader = CountingLoader(regression_batches(4), repeat_forever=True)
    searcher, result = _scores(_mlp(), data_loader=loader, max_iter_data_loader=limit)
    assert loader.drawn == limit == searcher.num_batches
    first = list(itertools.islice(itertools.cycle(regression_batches(4)), limit))
    _, expected = _scores(_mlp(), data_loader=first, max_iter_data_loader=limit)
    torch.testing.assert_close(result.importance[HIDDEN], expected.importance[HIDDEN])


def test_max_iter_data_loader_defaults_to_128_batches() -> None:
    assert GradientBinarySearcher().default_search_config["max_iter_data_loader"] == 128
    loader = CountingLoader(regression_batches(3), repeat_forever=True)
    searcher, _ = _scores(_mlp(), data_loader=loader)
    assert loader.drawn == 128 == searcher.num_batches


def test_a_loader_shorter_than_max_iter_is_used_whole() -> None:
    loader = CountingLoader(regression_batches(5))
    searcher, _ = _scores(_mlp(), data_loader=loader, max_iter_data_loader=100)
    assert loader.drawn == 5 == searcher.num_batches


# --- the state of the model while scoring and after ------------------------------------------


def test_scoring_runs_the_full_model_without_weight_gradients_and_restores_everything() -> None:
    model = _mlp()
    reference = copy.deepcopy(model)
    model.fc1.bias.requires_grad_(False)  # a user's frozen parameter stays frozen
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    model.train()
    seen = []

    def loss_func(m: nn.Module, batch) -> torch.Tensor:
        x, _ = batch
        output = m(x)
        seen.append(
            (
                torch.allclose(output, reference(x)),  # every mask is 1: the full model
                any(p.requires_grad for p in m.parameters()),
                m.training,
            )
        )
        return squared_error(m, batch)

    _scores(model, "params=70%", data_loader=regression_batches(3), loss_func=loss_func)
    assert seen == [(True, False, False)] * 3
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert model.training and no_hooks_left(model)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_loss_func_that_raises_mid_scoring_leaves_the_model_as_it_was(
    error: BaseException,
) -> None:
    model = _mlp()
    model.fc2.weight.requires_grad_(False)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    model.train()
    calls = []

    def loss_func(m: nn.Module, batch) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 2:
            raise error
        return squared_error(m, batch)

    with pytest.raises(type(error)):
        _scores(model, data_loader=regression_batches(4), loss_func=loss_func)
    assert len(calls) == 2
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert model.training and no_hooks_left(model)


def test_searching_inside_no_grad_still_scores() -> None:
    """A caller's torch.no_grad() (inference code) must not make a correct loss look broken."""
    batches = regression_batches(3)
    _, expected = _scores(_mlp(), data_loader=batches)
    with torch.no_grad():
        _, result = _scores(_mlp(), data_loader=batches)
        assert not torch.is_grad_enabled()
    torch.testing.assert_close(result.importance[HIDDEN], expected.importance[HIDDEN])


def test_a_user_input_error_mid_scoring_also_cleans_up() -> None:
    model = _mlp()
    batches = regression_batches(3)
    batches[1] = (torch.full_like(batches[1][0], float("nan")), batches[1][1])
    with pytest.raises(UserInputError, match="batch 1"):
        _scores(model, data_loader=batches)
    assert all(p.requires_grad for p in model.parameters()) and no_hooks_left(model)


# --- bad inputs --------------------------------------------------------------------------------


def _bad(loss_func, data_loader=None, match: str = "") -> UserInputError:
    model = _mlp()
    data_loader = regression_batches(2) if data_loader is None else data_loader
    with pytest.raises(UserInputError, match=match) as caught:
        _scores(model, data_loader=data_loader, loss_func=loss_func)
    assert no_hooks_left(model) and all(p.requires_grad for p in model.parameters())
    return caught.value


def test_a_non_scalar_loss_is_rejected() -> None:
    error = _bad(lambda m, b: m(b[0]), match="scalar")
    assert "(4, 3, 3)" in str(error) and ".mean()" in str(error)
    _bad(lambda m, b: [squared_error(m, b)], match="scalar tensor, got list")


def test_a_loss_computed_under_no_grad_is_rejected() -> None:
    def loss_func(m, b):
        with torch.no_grad():
            return squared_error(m, b)

    error = _bad(loss_func, match="no gradient path")
    assert "no_grad" in str(error)


def test_a_detached_loss_is_rejected() -> None:
    _bad(lambda m, b: squared_error(m, b).detach(), match="no gradient path")


def test_a_loss_that_does_not_reach_the_masks_is_rejected() -> None:
    unrelated = torch.ones((), requires_grad=True)
    error = _bad(lambda m, b: unrelated * 2, match="no gradient path to any gradnas mask")
    assert "model's output" in str(error)


def test_an_empty_data_loader_is_rejected() -> None:
    _bad(squared_error, data_loader=[], match="yielded no batches")


def test_a_nan_loss_names_the_batch() -> None:
    error = _bad(lambda m, b: squared_error(m, b) * float("nan"), match="loss is nan on batch 0")
    assert "float32" in str(error)


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"data_loader": None}, "gradnas needs data_loader"),
        ({"loss_func": None}, "gradnas needs loss_func"),
        ({"loss_func": "cross_entropy"}, "loss_func must be callable"),
        ({"max_iter_data_loader": 0}, "max_iter_data_loader must be a whole number >= 1, got 0"),
        ({"max_iter_data_loader": 2.5}, "max_iter_data_loader must be a whole number"),
        ({"convergence_patience": 0}, "convergence_patience must be a whole number >= 1"),
        ({"convergence_min_batches": -1}, "convergence_min_batches must be a whole number"),
        ({"convergence_tol": -0.1}, "convergence_tol must be a positive number"),
        ({"convergence_tol": "small"}, "convergence_tol must be a positive number"),
        ({"data_loaders": []}, "unknown search config key"),
    ],
)
def test_bad_search_configs_name_the_problem(config: dict, words: str) -> None:
    full = {"data_loader": regression_batches(1), "loss_func": squared_error, **config}
    with pytest.raises(UserInputError, match=words) as caught:
        GradientBinarySearcher().sanitize_search_config(full)
    if "unknown" in words:
        for key in ("max_iter_data_loader", "convergence_tol", "average_scores"):
            assert key in str(caught.value)


def test_a_missing_data_loader_fails_before_any_scoring() -> None:
    model = _mlp()
    with pytest.raises(UserInputError, match="data_loader"):
        GradientBinarySearcher().search(
            convert(model), "params=50%", config={"loss_func": squared_error}
        )
    assert no_hooks_left(model)


def test_a_user_score_func_is_ignored_with_a_warning() -> None:
    def score_func(model: nn.Module) -> float:
        raise AssertionError("gradnas must not call the score_func")

    with pytest.warns(UserWarning, match="ignores the score_func"):
        _, result = _scores(
            _mlp(), "params=60%", data_loader=regression_batches(2), score_func=score_func
        )
    assert result.cost_after <= result.limit


# --- SETUP_GRADIENT_FUNC ---------------------------------------------------------------------


def test_setup_gradient_func_is_filled_from_the_plugin_hook() -> None:
    setups = GradientBinarySearcher.SETUP_GRADIENT_FUNC
    assert setups[DynamicLinear] is setup_linear_input
    assert setups[DynamicMultiheadAttention] is setup_attention_heads
    assert len(setups) == len(dict(setups.items())) >= 2


def test_setup_gradient_func_is_writable_and_matches_subclasses() -> None:
    setups = GradientBinarySearcher.SETUP_GRADIENT_FUNC

    class SubLinear(DynamicLinear):
        pass

    sub = SubLinear.convert(nn.Linear(2, 2))
    assert setups.for_module(sub) is setup_linear_input  # inherited through the MRO
    custom = object()
    setups[SubLinear] = custom
    try:
        assert setups.for_module(sub) is custom
        assert SubLinear in setups and setups[SubLinear] is custom
    finally:
        del setups[SubLinear]
    assert SubLinear not in setups and setups.for_module(sub) is setup_linear_input
    assert setups.for_module(DynamicProjection.__new__(DynamicProjection)) is None
