"""Per-head attention masks (one slice per batch element and head, in the original head
order) through sorting, pruning and export: a bug found in review and one the fuzzing found."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import nasframe
from nasframe import convert, export


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
    """Regression (found in review): the export reordered the kept heads by importance, so a
    per-head attention mask made for the original head order no longer matched them."""
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


class PerHeadMaskAttention(nn.Module):
    """Self-attention whose model holds a per-head 3-D mask (one slice per batch and head)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 8)
        self.attn = nn.MultiheadAttention(8, 4, batch_first=True)
        self.register_buffer("mask", torch.randn(2 * 4, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        return self.attn(h, h, h, need_weights=False, attn_mask=self.mask)[0]


@pytest.mark.filterwarnings("ignore::UserWarning")  # as in the fuzz tests it came from
def test_a_model_with_a_per_head_mask_exports_to_a_model_that_runs() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4)
    space, result = nasframe.search(
        PerHeadMaskAttention().eval(),
        "params=60%",
        algorithm="fastnas",
        config={"score_func": lambda m: -float(m(x).square().mean()), "verbose": False},
    )
    assert result.config["attn.num_heads"] < 4
    with torch.no_grad():
        searched = space.model(x)  # the dynamic module restricts the mask to the kept heads
        exported = export(space)(x)  # the export selects the kept heads of the full mask
    torch.testing.assert_close(exported, searched, atol=1e-5, rtol=0)
