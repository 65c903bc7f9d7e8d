"""bf16 weights through the whole pipeline on the CPU: gradnas scores (in float32), the
search, the least-squares reconstruction (statistics in float64) and the export, for the
byte-level MLP and a tiny Llama; the weights stay bf16 and the result stays close to the
searched model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nasframe
from nasframe.app.byte_mlp import ByteMLPLM
from nasframe.app.lm import next_token_loss
from nasframe.reconstruction.reconstruct import reconstruct

VOCAB = 64


def byte_mlp() -> nn.Module:
    torch.manual_seed(0)
    return ByteMLPLM(context=2, dim=32, hidden=64, layers=2, vocab_size=VOCAB).eval()


def tiny_llama() -> nn.Module:
    pytest.importorskip("transformers")
    from hf_models.llama import tiny_model

    return tiny_model("llama")


def batches(count: int = 3, rows: int = 2, length: int = 12) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(0, VOCAB, (rows, length + 1), generator=generator) for _ in range(count)]


@pytest.mark.parametrize("build", [byte_mlp, tiny_llama], ids=["byte-mlp", "tiny-llama"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_weights_score_search_reconstruct_and_export(build, dtype) -> None:
    model = build().to(dtype)
    data = batches()
    dummy = data[0][:1, :-1]
    space, result = nasframe.search(
        model,
        "params=75%",
        dummy_input=dummy,
        algorithm="gradnas",
        config={
            "data_loader": data,
            "loss_func": next_token_loss,
            "max_iter_data_loader": len(data),
            "verbose": False,
        },
    )
    assert result.importance, "gradnas scored nothing"
    for name, scores in result.importance.items():
        assert scores.dtype == torch.float32, name
        assert torch.isfinite(scores).all() and (scores > 0).any(), name
    assert result.cost_after <= result.limit
    report = reconstruct(space, data, next_token_loss, "lsq")
    assert report.reconstructed, "nothing was reconstructed"
    assert {p.dtype for p in space.model.parameters()} == {dtype}  # added biases too
    with torch.no_grad():
        searched = space.model(dummy)
        searched = getattr(searched, "logits", searched).float()
        pruned = nasframe.export(space).eval()
        assert {p.dtype for p in pruned.parameters()} == {dtype}
        exported = pruned(dummy)
        exported = getattr(exported, "logits", exported).float()
    assert torch.isfinite(exported).all()
    torch.testing.assert_close(exported, searched, atol=2e-2, rtol=2e-2)
