"""Exports with pruned heads take a per-head 3-D ``attn_mask`` made for the original heads (the
kept ones are selected, as the searched model does) or one made for the kept heads, whichever
class they export to, and keep that knowledge through a copy, a pickle and a state dict."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from nasframe import convert, export
from nasframe.modules.attention import SlimMultiheadAttention

BATCH, HEADS, TARGET = 2, 4, 5


class MaskedAttention(nn.Module):
    """``proj -> attention(mask) -> head``, the mask an argument, batch-first or not."""

    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.proj = nn.Linear(3, 8)
        self.attn = nn.MultiheadAttention(8, HEADS, batch_first=batch_first)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        return self.head(self.attn(h, h, h, attn_mask=mask, need_weights=False)[0])


def _space(batch_first: bool):
    torch.manual_seed(0)
    space = convert(MaskedAttention(batch_first).eval())
    space.hparams["attn.num_heads"].importance = torch.tensor([0.1, 3.0, 2.0, 1.0])
    space.sort_parameters()  # heads now in the order 1, 2, 3, 0
    shape = (BATCH, TARGET, 3) if batch_first else (TARGET, BATCH, 3)
    return space, torch.randn(shape)


def _full_mask() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(BATCH * HEADS, TARGET, TARGET, generator=generator)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize(
    ("embed", "target"), [(4, nn.MultiheadAttention), (8, SlimMultiheadAttention)]
)
def test_an_export_with_pruned_heads_takes_a_mask_for_the_original_heads(
    batch_first: bool, embed: int, target: type
) -> None:
    space, x = _space(batch_first)
    space.select({"attn.num_heads": 2, "proj.out_features": embed})  # keeps heads 1 and 2
    mask = _full_mask()
    kept = mask.view(BATCH, HEADS, TARGET, TARGET)[:, [1, 2]].reshape(-1, TARGET, TARGET)
    with torch.no_grad():
        searched = space.model(x, mask)
        exported = export(space).eval()
        assert type(exported.attn) is target
        assert exported.attn.kept_heads.tolist() == [1, 2]
        torch.testing.assert_close(exported(x, mask), searched, atol=1e-5, rtol=0)
        torch.testing.assert_close(exported(x, kept), searched, atol=1e-5, rtol=0)
        torch.testing.assert_close(space.model(x, kept), searched, atol=1e-5, rtol=0)
        for twin in (copy.deepcopy(exported), _pickled(exported)):
            torch.testing.assert_close(twin(x, mask), searched, atol=1e-5, rtol=0)


def test_the_kept_heads_travel_with_the_weights() -> None:
    """``nasframe.load`` rebuilds the export, then loads the state dict: the buffer comes back."""
    space, x = _space(batch_first=True)
    space.select({"attn.num_heads": 2, "proj.out_features": 4})
    exported = export(space).eval()
    state = exported.state_dict()
    assert state["attn.kept_heads"].tolist() == [1, 2]
    fresh_space = convert(MaskedAttention(batch_first=True).eval())
    fresh_space.select({"attn.num_heads": 2, "proj.out_features": 4})
    rebuilt = export(fresh_space).eval()
    rebuilt.load_state_dict(state)
    mask = _full_mask()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, mask), exported(x, mask), atol=0, rtol=0)


def test_a_mask_for_neither_head_count_is_one_clear_error() -> None:
    space, x = _space(batch_first=True)
    space.select({"attn.num_heads": 2, "proj.out_features": 8})
    exported = export(space).eval()
    with pytest.raises(RuntimeError, match=r"2 x 4 \(the original heads\) or 2 x 2"):
        exported(x, torch.zeros(BATCH * 3, TARGET, TARGET))


def test_unpruned_heads_export_to_the_plain_class_without_hooks() -> None:
    space, x = _space(batch_first=True)
    exported = export(space).eval()
    assert type(exported.attn) is nn.MultiheadAttention
    assert not exported.attn._forward_pre_hooks
    assert "attn.kept_heads" not in exported.state_dict()
    mask = _full_mask()
    with torch.no_grad():
        torch.testing.assert_close(exported(x, mask), space.model(x, mask), atol=1e-5, rtol=0)


def _pickled(module: nn.Module) -> nn.Module:
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)
