"""Phi-3's fused projections: GQA, depth and hidden-size bookkeeping after pruning (the
fused ``qkv_proj`` keeps query, key and value rows in order, ``gate_up_proj`` keeps gate and
up rows, each attention's config states its kept heads), plain transformers directories of
uniform results and a KV-cache generation. A tiny random config, no download."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_models.decoders import (  # noqa: E402
    VOCAB,
    ids,
    logits,
    masked_logits,
    n_params,
    random_importance,
)
from hf_models.phi3 import HEAD_DIM, LAYERS, tiny_phi3  # noqa: E402
from nasframe_transformers import save_pretrained_pruned  # noqa: E402

import nasframe  # noqa: E402

ATTN = "model.layers.{}.self_attn."


def test_pruning_query_heads_keeps_every_kv_group_balanced():
    model = tiny_phi3()  # 3 KV groups of 2 query heads
    space = nasframe.convert(model)
    space.select({f"{ATTN.format(1)}query_heads_per_group": 1})
    exported = nasframe.export(space)
    attention = exported.model.layers[1].self_attn
    assert attention.qkv_proj.out_features == (3 + 3 + 3) * HEAD_DIM
    assert attention.o_proj.in_features == 3 * HEAD_DIM
    assert attention.num_key_value_groups == 1
    assert attention.config.num_attention_heads == 3
    assert exported.model.layers[0].self_attn.num_key_value_groups == 2
    assert exported.model.layers[0].self_attn.config.num_attention_heads == 6
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)


def test_pruning_kv_groups_removes_their_query_heads_too():
    model = tiny_phi3()
    space = nasframe.convert(model)
    space.select({f"{ATTN.format(0)}num_key_value_heads": 1})
    exported = nasframe.export(space)
    attention = exported.model.layers[0].self_attn
    assert attention.qkv_proj.out_features == (2 + 1 + 1) * HEAD_DIM
    assert attention.o_proj.in_features == 2 * HEAD_DIM
    assert vars(attention)["num_key_value_heads"] == 1
    assert (attention.config.num_attention_heads, attention.config.num_key_value_heads) == (2, 1)
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)
    torch.testing.assert_close(masked_logits(exported), masked_logits(model), atol=1e-5, rtol=0)


def test_the_fused_sections_keep_the_rows_of_the_kept_heads_in_order():
    model = tiny_phi3()
    full = model.model.layers[0].self_attn.qkv_proj.weight.detach().clone()
    space = nasframe.convert(model)
    space.select({f"{ATTN.format(0)}num_key_value_heads": 2})  # KV groups 0 and 1 kept
    exported = nasframe.export(space)
    kept = exported.model.layers[0].self_attn.qkv_proj.weight
    q, kv = 6 * HEAD_DIM, 3 * HEAD_DIM
    expected = torch.cat(
        [full[: 4 * HEAD_DIM], full[q : q + 2 * HEAD_DIM], full[q + kv : q + kv + 2 * HEAD_DIM]]
    )
    assert torch.equal(kept, expected)


def test_pruning_the_ffn_keeps_gate_and_up_rows_of_the_same_units():
    model = tiny_phi3()
    full = model.model.layers[2].mlp.gate_up_proj.weight.detach().clone()
    space = nasframe.convert(model)
    space.select({"model.layers.2.mlp.intermediate_size": 16})
    exported = nasframe.export(space)
    mlp = exported.model.layers[2].mlp
    assert mlp.gate_up_proj.out_features == 32 and mlp.down_proj.in_features == 16
    assert torch.equal(mlp.gate_up_proj.weight, torch.cat([full[:16], full[40:56]]))
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)


def test_depth_pruning_renumbers_the_kept_layers():
    model = tiny_phi3("eager")
    space = nasframe.convert(model)
    depth = space.hparams["model.layers.depth"]
    depth.importance = torch.tensor([1.0, 3.0, 2.0])  # keep layers 1 and 2
    space.sort_parameters()
    space.select({depth.name: 2})
    exported = nasframe.export(space)
    assert [layer.self_attn.layer_idx for layer in exported.model.layers] == [0, 1]
    assert exported.config.num_hidden_layers == 2
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)
    torch.testing.assert_close(masked_logits(exported), masked_logits(model), atol=1e-5, rtol=0)


def test_hidden_size_pruning_prunes_the_whole_residual_stream():
    model = tiny_phi3()
    space = nasframe.convert(model)
    random_importance(space)
    space.sort_parameters()
    space.select({"model.hidden_size": 24})
    exported = nasframe.export(space)
    assert exported.get_input_embeddings().weight.shape == (VOCAB, 24)
    assert exported.lm_head.in_features == 24
    for layer in exported.model.layers:
        for module in layer.modules():
            if isinstance(module, torch.nn.Linear):
                assert 24 in (module.in_features, module.out_features)
    assert exported.config.hidden_size == 24
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_a_uniform_export_loads_in_plain_transformers_with_the_same_logits(tmp_path, attention):
    model = tiny_phi3(attention)
    space = nasframe.convert(model)
    assert "model.hidden_size" in space.uniform_fixed  # Phi-3 derives head_dim
    random_importance(space)
    space.sort_parameters()
    config = {"model.layers.depth": LAYERS - 1}
    config |= {name: 16 for name in space.hparams if "intermediate_size" in name}
    space.select(config)
    exported = nasframe.export(space)
    assert all(layer.self_attn.config is exported.config for layer in exported.model.layers)
    save_pretrained_pruned(exported, tmp_path / "plain")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "plain", attn_implementation=attention
    ).eval()
    assert loaded.config.num_hidden_layers == 2 and loaded.config.intermediate_size == 16
    assert n_params(loaded) == n_params(exported)
    torch.testing.assert_close(logits(loaded), logits(exported), atol=1e-5, rtol=0)
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)
    torch.testing.assert_close(masked_logits(loaded), masked_logits(model), atol=1e-5, rtol=0)


def test_a_pruned_hidden_size_is_refused_by_the_plain_config(tmp_path):
    model = tiny_phi3()
    space = nasframe.convert(model)
    space.select({"model.hidden_size": 24})
    exported = nasframe.export(space)
    with pytest.raises(nasframe.UserInputError, match="derives head_dim"):
        save_pretrained_pruned(exported, tmp_path / "plain")


def test_generation_with_a_kv_cache_works_after_pruning_layers_and_heads():
    model = tiny_phi3()
    space = nasframe.convert(model)
    random_importance(space)
    space.sort_parameters()
    space.select(
        {
            "model.layers.depth": 2,
            f"{ATTN.format(0)}num_key_value_heads": 2,
            f"{ATTN.format(2)}query_heads_per_group": 1,
        }
    )
    exported = nasframe.export(space)
    prompt = ids(rows=1, length=6)
    cached = exported.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=True)
    uncached = exported.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
