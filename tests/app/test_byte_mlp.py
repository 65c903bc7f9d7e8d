"""Tests for the built-in byte-level MLP language model and its training loop."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from nasframe.app.byte_mlp import Block, ByteMLPLM, train_byte_mlp
from nasframe.app.lm import ByteTokenizer, next_token_loss, token_batches

ALLOWED_MODULES = (nn.Embedding, nn.Linear, nn.LayerNorm, nn.GELU)
ALLOWED_FUNCTIONS = {F.pad, operator.getitem, operator.add}


def _batches(n_batches: int = 4) -> list[torch.Tensor]:
    text = "the quick brown fox jumps over the lazy dog. " * 40
    return token_batches(ByteTokenizer().encode(text), seq_len=32, batch_size=4)[:n_batches]


def test_model_shapes_and_block_structure() -> None:
    model = ByteMLPLM(context=3, dim=8, hidden=16, layers=2, vocab_size=50)
    logits = model(torch.randint(0, 50, (2, 7)))
    assert logits.shape == (2, 7, 50)
    assert len(model.embeds) == 3 and len(model.blocks) == 2
    block = model.blocks[0]
    assert isinstance(block, Block)
    assert isinstance(block.norm, nn.LayerNorm) and isinstance(block.act, nn.GELU)
    assert (block.fc1.in_features, block.fc1.out_features) == (8, 16)
    assert (block.fc2.in_features, block.fc2.out_features) == (16, 8)
    assert model.head.out_features == 50


def test_invalid_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match="context"):
        ByteMLPLM(context=0)


def test_fx_trace_uses_only_prunable_ops_and_matches_the_module() -> None:
    torch.manual_seed(0)
    model = ByteMLPLM(context=4, dim=16, hidden=32, layers=2)
    traced = torch.fx.symbolic_trace(model)
    modules = dict(traced.named_modules())
    for node in traced.graph.nodes:
        if node.op == "call_module":
            assert isinstance(modules[node.target], ALLOWED_MODULES), node.format_node()
        elif node.op in ("call_function", "call_method"):
            assert node.target in ALLOWED_FUNCTIONS, node.format_node()
    ids = torch.randint(0, 256, (3, 11))
    assert torch.equal(traced(ids), model(ids))


@pytest.mark.parametrize("context", [1, 4])
def test_logits_at_t_depend_only_on_the_last_context_tokens(context: int) -> None:
    torch.manual_seed(0)
    model = ByteMLPLM(context=context, dim=16, hidden=32, layers=2).eval()
    ids = torch.randint(1, 256, (1, 12))
    base = model(ids)
    for t in range(12):
        changed = ids.clone()
        changed[0, t] = (changed[0, t] + 1) % 256
        out = model(changed)
        affected = (out - base).abs().amax(dim=-1)[0] > 0
        expected = [t <= s < t + context for s in range(12)]
        assert affected.tolist() == expected, f"changing token {t}"


def test_short_training_reduces_loss() -> None:
    batches = _batches()
    untrained = train_byte_mlp(batches, steps=0, progress=False)
    trained = train_byte_mlp(batches, steps=8, progress=False)
    with torch.no_grad():
        before = sum(next_token_loss(untrained, b).item() for b in batches)
        after = sum(next_token_loss(trained, b).item() for b in batches)
    assert after < 0.8 * before
    assert not trained.training


def test_training_is_deterministic_given_the_seed() -> None:
    batches = _batches(2)
    first = train_byte_mlp(batches, steps=3, seed=1, progress=False).state_dict()
    second = train_byte_mlp(batches, steps=3, seed=1, progress=False).state_dict()
    other = train_byte_mlp(batches, steps=3, seed=2, progress=False).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["head.weight"], other["head.weight"])


def test_progress_bar_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    batches = _batches(1)
    train_byte_mlp(batches, steps=1, progress=False)
    assert capsys.readouterr().err == ""
    train_byte_mlp(batches, steps=1, progress=True)
    assert "training byte MLP" in capsys.readouterr().err


def test_training_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        train_byte_mlp(_batches(1), steps=-1, progress=False)
    with pytest.raises(ValueError, match="at least one batch"):
        train_byte_mlp([], steps=1, progress=False)
