"""gradnas scoring on a real decoder computes only mask gradients: no weight requires grad
during its backward, no ``.grad`` is left on (or added to) any weight, and every weight's
``requires_grad`` is as it was afterwards. This is what keeps scoring's memory under a
training step's (``benchmarks/scoring_memory.py``)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from gradnas.searcher import GradientBinarySearcher  # noqa: E402
from hf_models.llama import ids, tiny_model  # noqa: E402

from nasframe.api import convert  # noqa: E402
from nasframe.app.lm import next_token_loss  # noqa: E402


def _score(model: torch.nn.Module, loss_func) -> dict[str, torch.Tensor]:
    searcher = GradientBinarySearcher()
    searcher.space = convert(model)
    searcher.configure(
        {
            "data_loader": [ids(seed=1), ids(seed=2)],
            "loss_func": loss_func,
            "max_iter_data_loader": 2,
            "verbose": False,
        }
    )
    return searcher.compute_importance(searcher.hparam_names_for_search())


def test_scoring_a_llama_leaves_no_weight_gradient_and_restores_requires_grad() -> None:
    model = tiny_model("llama")
    frozen = model.model.norm.weight
    frozen.requires_grad_(False)  # a user's frozen weight stays frozen
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    during = []

    def loss_func(m: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        during.append([name for name, p in m.named_parameters() if p.requires_grad])
        return next_token_loss(m, batch)

    scores = _score(model, loss_func)
    assert during == [[], []]  # backward has no weight to compute a gradient for
    assert all(p.grad is None for p in model.parameters())
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert scores and all(torch.isfinite(s).all() and s.sum() > 0 for s in scores.values())


def test_scoring_leaves_a_users_existing_weight_gradients_untouched() -> None:
    """Scoring between two training steps must not add to the gradients being accumulated."""
    model = tiny_model("llama")
    next_token_loss(model, ids(seed=3)).backward()
    before = {name: p.grad.clone() for name, p in model.named_parameters()}
    _score(model, next_token_loss)
    for name, p in model.named_parameters():
        assert torch.equal(p.grad, before[name]), name


def test_scores_do_not_depend_on_whether_the_weights_required_grad() -> None:
    """Freezing the weights changes what backward stores, never the mask gradients."""
    trainable, frozen = tiny_model("llama"), tiny_model("llama")
    for p in frozen.parameters():
        p.requires_grad_(False)
    first, second = _score(trainable, next_token_loss), _score(frozen, next_token_loss)
    assert first.keys() == second.keys()
    for name, value in first.items():
        assert torch.equal(value, second[name]), name
