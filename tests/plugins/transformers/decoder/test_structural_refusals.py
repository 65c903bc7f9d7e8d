"""What the structure description refuses, with one line naming the module and what it did
not understand: mixture-of-experts layers (Mixtral, Qwen2-MoE, a ModuleList of experts),
heads that are not interchangeable (Bloom's ALiBi slopes differ per head), a fused projection
of an unknown row layout (Falcon's multi-query one) or whose rows are not laid out as its
name says, and a module it does not know. Tiny random configs, no download."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_models.decoders import VOCAB  # noqa: E402
from hf_models.structural import IDS, tiny_model  # noqa: E402
from nasframe_transformers.families.decoder import attention_layout  # noqa: E402

import nasframe  # noqa: E402

SIZES = {"hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2}
HEADS = {"num_attention_heads": 4, "num_key_value_heads": 2}
MOE = {
    "mixtral": lambda: transformers.MixtralConfig(num_local_experts=4, **HEADS),
    "qwen2_moe": lambda: transformers.Qwen2MoeConfig(
        num_experts=4, moe_intermediate_size=16, shared_expert_intermediate_size=16, **HEADS
    ),
}


def _refusal(model) -> str:
    with pytest.raises(nasframe.UserInputError) as raised:
        nasframe.convert(model)
    message = str(raised.value)
    assert "\n" not in message and "torch.fx" not in message
    return message


@pytest.mark.parametrize("family", sorted(MOE))
def test_a_mixture_of_experts_layer_stops_with_one_line_naming_it(family):
    config = MOE[family]()
    config.update({"vocab_size": VOCAB, **IDS, **SIZES})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    message = _refusal(model)
    block = type(model.model.layers[0].mlp).__name__
    assert f"model.layers.0.mlp ({block})" in message
    assert "mixture-of-experts" in message and "4 experts in model.layers.0.mlp.experts" in message
    assert "routed by model.layers.0.mlp.gate" in message and "does not prune experts" in message


class ListOfExperts(torch.nn.Module):
    """A router and a ModuleList of MLPs (the older way of holding experts)."""

    def __init__(self, mlp: torch.nn.Module, experts: int = 3) -> None:
        super().__init__()
        hidden = mlp.down_proj.out_features
        self.gate = torch.nn.Linear(hidden, experts, bias=False)
        self.experts = torch.nn.ModuleList(
            type(mlp)(mlp.config) if hasattr(mlp, "config") else mlp for _ in range(experts)
        )

    def forward(self, x):
        weights = self.gate(x).softmax(-1)
        pairs = zip(weights.unbind(-1), self.experts, strict=True)
        return sum(w[..., None] * expert(x) for w, expert in pairs)


def test_a_module_list_of_experts_stops_with_one_line_naming_it():
    model = tiny_model("qwen3")
    for layer in model.model.layers:
        layer.mlp = ListOfExperts(layer.mlp)
    message = _refusal(model)
    assert "model.layers.0.mlp (ListOfExperts)" in message
    assert "3 experts in model.layers.0.mlp.experts, routed by model.layers.0.mlp.gate" in message


def test_heads_that_are_not_interchangeable_stop_the_description():
    # Bloom's query_key_value is laid out per head as GPT-NeoX's, but ALiBi gives every head
    # its own slope: no head can be removed without changing what the others compute.
    config = transformers.BloomConfig(vocab_size=VOCAB, hidden_size=32, n_layer=2, n_head=4)
    torch.manual_seed(0)
    message = _refusal(transformers.AutoModelForCausalLM.from_config(config).eval())
    assert "transformer.h.0.self_attention.query_key_value (Linear)" in message
    assert "not interchangeable" in message


def test_a_fused_projection_whose_rows_are_not_as_its_name_says_stops(monkeypatch):
    # Read GPT-NeoX's query_key_value as if its rows were all queries, then keys, then values:
    # the probe swaps two heads' rows as that layout places them and sees the outputs change.
    monkeypatch.setattr(attention_layout, "FUSED_CONTIGUOUS", ("qkv_proj", "query_key_value"))
    monkeypatch.setattr(attention_layout, "FUSED_PER_HEAD", ())
    model = tiny_model("gpt_neox")
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    message = _refusal(model)
    assert "gpt_neox.layers.0.attention.query_key_value (Linear)" in message
    assert "then key rows, then value rows" in message
    assert all(torch.equal(p, weights[name]) for name, p in model.named_parameters())


def test_a_fused_qkv_projection_of_an_unknown_layout_stops_with_one_line_naming_it():
    # Falcon's multi-query query_key_value (all query heads, then one key and one value head,
    # in a Linear subclass) is a layout not understood yet.
    config = transformers.FalconConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4
    )
    message = _refusal(transformers.AutoModelForCausalLM.from_config(config).eval())
    assert "transformer.h.0.self_attention.query_key_value" in message and "fused" in message


def test_a_module_the_description_does_not_know_is_named():
    model = tiny_model("qwen3")
    model.model.layers[1].extra = torch.nn.Conv1d(48, 48, 1)
    with pytest.raises(nasframe.UserInputError, match=r"model\.layers\.1\.extra \(Conv1d\)"):
        nasframe.convert(model)
