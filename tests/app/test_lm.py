"""Tests for tokenization, batching, next-token loss and perplexity."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nasframe.app.lm import ByteTokenizer, next_token_loss, perplexity, token_batches
from nasframe.errors import UserInputError


class UniformLM(nn.Module):
    """Predicts every token with equal probability, so its perplexity is the vocabulary size."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.zeros(*ids.shape, self.vocab_size)


class TinyLM(nn.Module):
    """A bigram model whose output wrapper is configurable, to test the logits conventions."""

    def __init__(self, wrap: str = "tensor") -> None:
        super().__init__()
        self.embed = nn.Embedding(256, 256)
        self.wrap = wrap

    def forward(self, ids: torch.Tensor) -> object:
        logits = self.embed(ids)
        if self.wrap == "object":
            return SimpleNamespace(logits=logits, loss=None)
        if self.wrap == "tuple":
            return (logits, "cache")
        return logits


def test_byte_tokenizer_round_trips_utf8() -> None:
    tokenizer = ByteTokenizer()
    ids = tokenizer.encode("héllo ✓")
    assert ids == list("héllo ✓".encode())
    assert all(0 <= i < tokenizer.vocab_size for i in ids) and tokenizer.vocab_size == 256
    assert tokenizer.decode(ids) == "héllo ✓"


def test_token_batches_are_contiguous_windows_in_order() -> None:
    batches = token_batches(list(range(100)), seq_len=4, batch_size=3)
    assert len(batches) == 100 // 15
    for batch in batches:
        assert batch.shape == (3, 5) and batch.dtype == torch.int64
    assert batches[0].tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14]]
    assert batches[1][0].tolist() == [15, 16, 17, 18, 19]
    assert len(token_batches(torch.arange(100), 4, 3, max_batches=2)) == 2


def test_token_batches_do_not_alias_the_input() -> None:
    tokens = torch.arange(20)
    batch = token_batches(tokens, seq_len=4, batch_size=2)[0]
    tokens[0] = 99
    assert batch[0, 0].item() == 0


@settings(deadline=None, max_examples=60)
@given(
    n_tokens=st.integers(min_value=0, max_value=600),
    seq_len=st.integers(min_value=1, max_value=20),
    batch_size=st.integers(min_value=1, max_value=8),
    max_batches=st.one_of(st.none(), st.integers(min_value=1, max_value=5)),
)
def test_token_batches_property(
    n_tokens: int, seq_len: int, batch_size: int, max_batches: int | None
) -> None:
    tokens = torch.randint(0, 256, (n_tokens,), generator=torch.Generator().manual_seed(n_tokens))
    per_batch = batch_size * (seq_len + 1)
    if n_tokens < per_batch:
        with pytest.raises(UserInputError, match=f"has {n_tokens} tokens.*needs {per_batch}"):
            token_batches(tokens, seq_len, batch_size, max_batches)
        return
    batches = token_batches(tokens, seq_len, batch_size, max_batches)
    expected = n_tokens // per_batch
    assert len(batches) == (expected if max_batches is None else min(expected, max_batches))
    assert all(b.shape == (batch_size, seq_len + 1) for b in batches)
    flat = torch.cat([b.reshape(-1) for b in batches])
    assert torch.equal(flat, tokens[: flat.numel()])
    again = token_batches(tokens.tolist(), seq_len, batch_size, max_batches)
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))


@pytest.mark.parametrize(
    ("seq_len", "batch_size", "max_batches"), [(0, 1, None), (4, 0, None), (4, 1, 0)]
)
def test_token_batches_reject_non_positive_sizes(
    seq_len: int, batch_size: int, max_batches: int | None
) -> None:
    with pytest.raises(UserInputError, match="at least 1"):
        token_batches(list(range(100)), seq_len, batch_size, max_batches)


@pytest.mark.parametrize("wrap", ["tensor", "object", "tuple"])
def test_next_token_loss_equals_manual_cross_entropy(wrap: str) -> None:
    torch.manual_seed(0)
    model = TinyLM(wrap)
    batch = torch.randint(0, 256, (3, 9))
    logits = model.embed(batch[:, :-1])
    manual = F.cross_entropy(logits.reshape(-1, 256), batch[:, 1:].reshape(-1))
    assert torch.allclose(next_token_loss(model, batch), manual)


def test_next_token_loss_rejects_wrong_outputs() -> None:
    batch = torch.zeros(2, 5, dtype=torch.long)

    class Flat(nn.Module):
        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return torch.zeros(ids.shape[0], 256)

    class Words(nn.Module):
        def forward(self, ids: torch.Tensor) -> str:
            return "logits"

    with pytest.raises(ValueError, match="shape"):
        next_token_loss(Flat(), batch)
    with pytest.raises(TypeError, match="returned str"):
        next_token_loss(Words(), batch)


@pytest.mark.parametrize("vocab_size", [7, 256])
def test_perplexity_of_uniform_model_is_vocab_size(vocab_size: int) -> None:
    batches = token_batches(torch.randint(0, vocab_size, (500,)), seq_len=10, batch_size=4)
    assert perplexity(UniformLM(vocab_size), batches) == pytest.approx(vocab_size, rel=1e-4)


def test_perplexity_is_token_weighted_and_restores_training_mode() -> None:
    torch.manual_seed(0)
    model = TinyLM()
    big = torch.randint(0, 256, (4, 11))
    small = torch.randint(0, 256, (1, 11))
    expected = math.exp(
        (next_token_loss(model, big).item() * 40 + next_token_loss(model, small).item() * 10) / 50
    )
    model.train()
    assert perplexity(model, [big, small]) == pytest.approx(expected, rel=1e-6)
    assert model.training
    model.eval()
    perplexity(model, [big])
    assert not model.training


def test_perplexity_needs_a_batch() -> None:
    with pytest.raises(ValueError, match="at least one batch"):
        perplexity(TinyLM(), [])
