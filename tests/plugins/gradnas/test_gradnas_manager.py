"""GradientDataManager and where gradnas puts its masks: the gradient each mask receives."""

from __future__ import annotations

import copy

import pytest
import torch
from gradnas.data_manager import GradientDataManager
from gradnas.setups import setup_attention_heads, setup_linear_input
from gradnas_models import MLP, AttentionLM, no_hooks_left, squared_error
from torch import nn

from nasframe.api import convert
from nasframe.modules.attention import DynamicMultiheadAttention
from nasframe.modules.linear import DynamicLinear

# --- GradientDataManager ------------------------------------------------------------------


def test_mask_is_fp32_ones_that_require_grad_whatever_the_model_dtype() -> None:
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        model = nn.Linear(3, 2).to(dtype)
        manager = GradientDataManager((4, 2), model)
        assert manager.mask.dtype == torch.float32
        assert manager.mask.requires_grad and manager.mask.is_leaf
        assert torch.equal(manager.mask.detach(), torch.ones(4, 2))
        assert manager.mask.device == model.weight.device
        assert manager.accumulated.dtype == torch.float32
        assert torch.equal(manager.accumulated, torch.zeros(4, 2))
        assert manager.num_batches == 0


def test_a_model_without_parameters_gets_a_cpu_mask() -> None:
    manager = GradientDataManager(3, nn.ReLU())
    assert manager.mask.device == torch.device("cpu") and manager.mask.shape == (3,)


def test_process_gradient_adds_the_squared_gradient_and_clears_it() -> None:
    manager = GradientDataManager(3, nn.Linear(1, 1))
    (manager.mask * torch.tensor([1.0, -2.0, 0.5])).sum().backward()
    manager.process_gradient()
    assert manager.mask.grad is None
    assert torch.equal(manager.accumulated, torch.tensor([1.0, 4.0, 0.25]))
    (manager.mask * torch.tensor([3.0, 0.0, -1.0])).sum().backward()
    manager.process_gradient()
    assert torch.equal(manager.accumulated, torch.tensor([10.0, 4.0, 1.25]))
    assert manager.num_batches == 2


def test_a_mask_the_loss_did_not_reach_adds_zero_but_counts_the_batch() -> None:
    manager = GradientDataManager(2, nn.Linear(1, 1))
    manager.process_gradient()
    assert torch.equal(manager.accumulated, torch.zeros(2)) and manager.num_batches == 1


def test_score_is_reduce_func_of_the_accumulated_sum() -> None:
    manager = GradientDataManager((2, 3), nn.Linear(1, 1), reduce_func=lambda s: s.sum(dim=1))
    (manager.mask * torch.arange(6.0).view(2, 3)).sum().backward()
    manager.process_gradient()
    assert torch.equal(manager.score, torch.tensor([0.0 + 1 + 4, 9.0 + 16 + 25]))
    assert torch.equal(GradientDataManager(2, nn.Linear(1, 1)).score, torch.zeros(2))


def test_accumulated_can_be_replaced_for_example_after_an_all_reduce() -> None:
    manager = GradientDataManager(2, nn.Linear(1, 1))
    manager.accumulated = torch.tensor([1, 2], dtype=torch.float64)
    assert manager.accumulated.dtype == torch.float32
    assert torch.equal(manager.score, torch.tensor([1.0, 2.0]))


# --- the mask of a Linear's input features --------------------------------------------------


def _converted_mlp(act: nn.Module, dtype=torch.float64, seed: int = 0, **sizes):
    torch.manual_seed(seed)
    model = MLP(act=act, **sizes).to(dtype)
    reference = copy.deepcopy(model)
    space = convert(model)
    assert isinstance(model.fc2, DynamicLinear)
    return model, reference, space


def _analytic_mask_gradient(reference: MLP, x: torch.Tensor, target: torch.Tensor):
    """d L / d mask_j = sum over rows and positions of a_j * dL/da_j, with
    L = 0.5 * ||fc2(a) - target||^2 and a = act(fc1(x)), so dL/da = (y - target) @ W2."""
    with torch.no_grad():
        a = reference.act(reference.fc1(x))
        y = reference.fc2(a)
        dl_da = (y - target) @ reference.fc2.weight
        return (a * dl_da).sum(dim=(0, 1))


def test_linear_input_mask_gradient_is_the_activation_times_its_gradient() -> None:
    model, reference, _ = _converted_mlp(nn.Tanh(), d=5, hidden=7, out=3)
    manager, handle = setup_linear_input(model.fc2)
    assert manager.hparam is model.fc2.get_hparam("in_features")
    assert manager.hparam.name == "fc1.out_features" and manager.mask.shape == (7,)
    x, target = torch.randn(4, 3, 5, dtype=torch.float64), torch.randn(4, 3, 3, dtype=torch.float64)
    squared_error(model, (x, target)).backward()
    expected = _analytic_mask_gradient(reference, x, target)
    torch.testing.assert_close(manager.mask.grad.double(), expected, rtol=1e-5, atol=1e-6)
    manager.process_gradient()
    torch.testing.assert_close(manager.score.double(), expected**2, rtol=1e-5, atol=1e-8)
    handle.remove()
    assert not model.fc2._forward_pre_hooks


def test_the_linear_input_mask_works_when_the_linear_is_called_by_keyword() -> None:
    model, _, _ = _converted_mlp(nn.Tanh(), d=5, hidden=7, out=3)
    manager, handle = setup_linear_input(model.fc2)
    a = model.act(model.fc1(torch.randn(2, 5, dtype=torch.float64)))
    by_position, by_keyword = model.fc2(a), model.fc2(input=a)
    torch.testing.assert_close(by_keyword, by_position)
    by_keyword.sum().backward()
    assert manager.mask.grad is not None and manager.mask.grad.abs().sum() > 0
    handle.remove()


def test_linear_input_mask_gradient_matches_finite_differences() -> None:
    model, _, _ = _converted_mlp(nn.GELU(), d=4, hidden=6, out=2, seed=1)
    manager, handle = setup_linear_input(model.fc2)
    x, target = torch.randn(3, 5, 4, dtype=torch.float64), torch.randn(3, 5, 2, dtype=torch.float64)
    squared_error(model, (x, target)).backward()
    gradient = manager.mask.grad.clone()

    # The fp32 mask is cast to the input's dtype; make it float64 so the difference quotient
    # is not swamped by rounding.
    manager.mask = manager.mask.detach().double()
    eps = 1e-6
    for unit in range(6):
        losses = []
        for step in (eps, -eps):
            manager.mask[unit] = 1.0 + step
            with torch.no_grad():
                losses.append(squared_error(model, (x, target)).item())
            manager.mask[unit] = 1.0
        quotient = (losses[0] - losses[1]) / (2 * eps)
        assert quotient == pytest.approx(gradient[unit].item(), rel=1e-4, abs=1e-6)
    handle.remove()


def test_the_mask_sits_after_the_nonlinearity() -> None:
    """A ReLU unit whose pre-activation is always negative outputs 0: removing it changes
    nothing, and its score is exactly 0. A sigmoid unit whose pre-activation is always 0 still
    outputs 0.5: removing it changes the output, so its score is not 0 (a mask on the
    producing Linear's output, before the activation, would multiply 0 and score it 0)."""
    x, target = torch.randn(4, 3, 5, dtype=torch.float64), torch.randn(4, 3, 3, dtype=torch.float64)

    relu_model, _, _ = _converted_mlp(nn.ReLU(), d=5, hidden=7, out=3)
    with torch.no_grad():
        relu_model.fc1.bias[2] = -100.0
    manager, _ = setup_linear_input(relu_model.fc2)
    squared_error(relu_model, (x, target)).backward()
    manager.process_gradient()
    assert manager.score[2].item() == 0.0
    assert (manager.score[[0, 1, 3, 4, 5, 6]] > 0).sum() >= 4  # ReLU may kill a few others

    sigmoid_model, reference, _ = _converted_mlp(nn.Sigmoid(), d=5, hidden=7, out=3)
    with torch.no_grad():
        for m in (sigmoid_model, reference):
            m.fc1.weight[2] = 0.0
            m.fc1.bias[2] = 0.0
    manager, _ = setup_linear_input(sigmoid_model.fc2)
    squared_error(sigmoid_model, (x, target)).backward()
    expected = _analytic_mask_gradient(reference, x, target)
    assert abs(expected[2].item()) > 1e-3
    torch.testing.assert_close(manager.mask.grad.double(), expected, rtol=1e-5, atol=1e-6)


def test_masks_are_fp32_for_half_precision_models() -> None:
    x = torch.randn(4, 3, 5)
    target = torch.randn(4, 3, 3)
    for dtype in (torch.bfloat16, torch.float16):
        model, _, _ = _converted_mlp(nn.Tanh(), dtype=dtype, d=5, hidden=7, out=3)
        manager, _ = setup_linear_input(model.fc2)
        try:
            loss = squared_error(model, (x.to(dtype), target))
        except RuntimeError as error:  # an older CPU build without half matmul
            pytest.skip(f"{dtype} matmul unsupported on this CPU: {error}")
        loss.backward()
        assert manager.mask.grad.dtype == torch.float32
        manager.process_gradient()
        assert manager.score.dtype == torch.float32
        assert torch.isfinite(manager.score).all() and (manager.score > 0).all()


# --- the mask of attention heads -----------------------------------------------------------


def _attention_model(need_weights: bool, dtype=torch.float64, seed: int = 0):
    torch.manual_seed(seed)
    model = AttentionLM(vocab=11, dim=8, heads=4, need_weights=need_weights).to(dtype)
    convert(model)
    assert isinstance(model.attn, DynamicMultiheadAttention)
    return model


def _attention_loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(ids).pow(2).mean()


@pytest.mark.parametrize("need_weights", [False, True], ids=["sdpa", "explicit-softmax"])
def test_head_mask_gradient_matches_finite_differences(need_weights: bool) -> None:
    model = _attention_model(need_weights)
    manager, handle = setup_attention_heads(model.attn)
    assert manager.hparam is model.attn.get_hparam("num_heads") and manager.mask.shape == (4,)
    ids = torch.randint(0, 11, (3, 6), generator=torch.Generator().manual_seed(0))
    _attention_loss(model, ids).backward()
    gradient = manager.mask.grad.clone()
    assert len(set(gradient.tolist())) == 4  # every head gets its own value

    manager.mask = manager.mask.detach().double()
    eps = 1e-6
    for head in range(4):
        losses = []
        for step in (eps, -eps):
            manager.mask[head] = 1.0 + step
            with torch.no_grad():
                losses.append(_attention_loss(model, ids).item())
            manager.mask[head] = 1.0
        quotient = (losses[0] - losses[1]) / (2 * eps)
        assert quotient == pytest.approx(gradient[head].item(), rel=1e-4, abs=1e-8)
    handle.remove()
    assert no_hooks_left(model)


def test_head_scores_do_not_depend_on_the_attention_kernel() -> None:
    ids = torch.randint(0, 11, (3, 6), generator=torch.Generator().manual_seed(1))
    gradients = []
    for need_weights in (False, True):
        model = _attention_model(need_weights, seed=3)
        manager, _ = setup_attention_heads(model.attn)
        _attention_loss(model, ids).backward()
        gradients.append(manager.mask.grad)
    torch.testing.assert_close(gradients[0], gradients[1], rtol=1e-5, atol=1e-9)


def test_a_head_that_is_already_removed_from_the_output_scores_zero() -> None:
    model = _attention_model(need_weights=False)
    head_dim = 2
    with torch.no_grad():  # zero the output projection's columns of head 1
        model.attn.out_proj.weight[:, head_dim : 2 * head_dim] = 0.0
    manager, _ = setup_attention_heads(model.attn)
    _attention_loss(model, torch.randint(0, 11, (3, 6))).backward()
    manager.process_gradient()
    assert manager.score[1].item() == 0.0
    assert (manager.score[[0, 2, 3]] > 0).all()
