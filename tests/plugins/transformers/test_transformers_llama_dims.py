"""Llama-style models: KV groups, query heads within groups, hidden size and depth.

Tiny randomly initialised configs, no download. Checks the bookkeeping a user relies on after
pruning (projection shapes, tied embeddings, renumbered layers, configs that plain
transformers loads) and where gradnas puts each mask (zeroing a mask is exactly removing the
units it gates).
"""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

transformers = pytest.importorskip("transformers")

from hf_models.llama_dims import (  # noqa: E402
    FAMILIES,
    HEAD_DIM,
    VOCAB,
    ids,
    logits,
    n_params,
    random_importance,
    tiny_model,
)
from nasframe_transformers import save_pretrained_pruned  # noqa: E402

import nasframe  # noqa: E402
from nasframe.cost.cost_model import CostModel  # noqa: E402


@st.composite
def configs(draw, space):
    return {name: draw(st.sampled_from(hp.choices)) for name, hp in space.hparams.items()}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_full_size_is_unchanged_before_and_after_sorting(family, attention):
    model = tiny_model(family, attention)
    reference = copy.deepcopy(model)
    space = nasframe.convert(model)
    assert torch.equal(logits(model), logits(reference))
    random_importance(space)
    space.sort_parameters()
    torch.testing.assert_close(logits(model), logits(reference), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_export_equals_the_dynamic_model_and_the_cost_model_counts_its_parameters(family, data):
    model = tiny_model(family, tied=data.draw(st.booleans()))
    space = nasframe.convert(model)
    random_importance(space, seed=data.draw(st.integers(0, 100)))
    if data.draw(st.booleans()):
        space.sort_parameters()
    space.select(data.draw(configs(space)))
    exported = nasframe.export(space)
    assert not any(isinstance(m, nasframe.DynamicModule) for m in exported.modules())
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)
    assert CostModel(space).params() == n_params(exported)


def test_pruning_query_heads_keeps_every_kv_group_balanced():
    model = tiny_model(heads=6, kv_heads=3)  # 3 groups of 2 query heads
    space = nasframe.convert(model)
    space.select({"model.layers.1.self_attn.query_heads_per_group": 1})
    exported = nasframe.export(space)
    attention = exported.model.layers[1].self_attn
    assert attention.q_proj.out_features == 3 * 1 * HEAD_DIM
    assert attention.o_proj.in_features == 3 * HEAD_DIM
    assert attention.k_proj.out_features == attention.v_proj.out_features == 3 * HEAD_DIM
    assert attention.num_key_value_groups == 1
    untouched = exported.model.layers[0].self_attn
    assert untouched.q_proj.out_features == 6 * HEAD_DIM and untouched.num_key_value_groups == 2
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)


def test_pruning_kv_groups_removes_their_query_heads_too():
    model = tiny_model(heads=6, kv_heads=3)
    space = nasframe.convert(model)
    space.select({"model.layers.0.self_attn.num_key_value_heads": 1})
    exported = nasframe.export(space)
    attention = exported.model.layers[0].self_attn
    assert attention.k_proj.out_features == attention.v_proj.out_features == HEAD_DIM
    assert attention.q_proj.out_features == attention.o_proj.in_features == 2 * HEAD_DIM
    assert attention.num_key_value_groups == 2
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)


def test_a_kv_group_is_removed_with_exactly_its_own_query_heads():
    """Keeping KV group 2 only must keep query heads 4 and 5 (group-major layout), which is
    what repeat_kv pairs with key/value head 2."""
    model = tiny_model(heads=6, kv_heads=3)
    original = copy.deepcopy(model.model.layers[0].self_attn)
    space = nasframe.convert(model)
    hparam = space.hparams["model.layers.0.self_attn.num_key_value_heads"]
    hparam.importance = torch.tensor([0.0, 0.0, 1.0])
    space.select({hparam.name: 1})
    attention = nasframe.export(space).model.layers[0].self_attn
    rows = slice(4 * HEAD_DIM, 6 * HEAD_DIM)
    assert torch.equal(attention.q_proj.weight, original.q_proj.weight[rows])
    assert torch.equal(attention.o_proj.weight, original.o_proj.weight[:, rows])
    assert torch.equal(attention.k_proj.weight, original.k_proj.weight[2 * HEAD_DIM :])


@pytest.mark.parametrize("tied", [True, False])
def test_hidden_size_pruning_keeps_tied_embeddings_tied(tied):
    model = tiny_model(tied=tied)
    space = nasframe.convert(model)
    random_importance(space)
    space.sort_parameters()
    space.select({"model.hidden_size": 20})
    exported = nasframe.export(space)
    assert exported.model.embed_tokens.weight.shape == (VOCAB, 20)
    assert (exported.lm_head.weight is exported.model.embed_tokens.weight) == tied
    for layer in exported.model.layers:
        assert layer.self_attn.q_proj.in_features == layer.mlp.up_proj.in_features == 20
        assert layer.self_attn.o_proj.out_features == layer.mlp.down_proj.out_features == 20
        assert layer.input_layernorm.weight.shape == (20,)
    assert exported.config.hidden_size == 20
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)


def test_depth_pruning_removes_whole_layers_and_renumbers_them():
    layer_types = ["full_attention", "sliding_attention", "full_attention", "sliding_attention"]
    model = tiny_model(
        "qwen2", layers=4, use_sliding_window=True, sliding_window=4, layer_types=layer_types
    )
    space = nasframe.convert(model)
    depth = space.hparams["model.layers.depth"]
    depth.importance = torch.tensor([4.0, 1.0, 3.0, 2.0])  # keep layers 0 and 2
    space.sort_parameters()  # layers are never reordered
    space.select({depth.name: 2})
    kept = [model.model.layers.all_layers()[i] for i in (0, 2)]
    reference = [copy.deepcopy(layer.mlp.up_proj.weight) for layer in kept]
    exported = nasframe.export(space)
    assert len(exported.model.layers) == 2
    assert [layer.self_attn.layer_idx for layer in exported.model.layers] == [0, 1]
    assert exported.config.num_hidden_layers == 2
    assert exported.config.layer_types == ["full_attention", "full_attention"]
    for layer, weight in zip(exported.model.layers, reference, strict=True):
        assert torch.equal(layer.mlp.up_proj.weight, weight)
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)


def test_generation_with_a_kv_cache_works_after_pruning_layers_and_heads():
    model = tiny_model()
    space = nasframe.convert(model)
    random_importance(space)
    space.sort_parameters()
    space.select(
        {
            "model.layers.depth": 2,
            "model.layers.0.self_attn.num_key_value_heads": 2,
            "model.layers.2.self_attn.query_heads_per_group": 1,
        }
    )
    exported = nasframe.export(space)
    prompt = ids(rows=1, length=5)
    generated = exported.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=True)
    without_cache = exported.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=False)
    assert torch.equal(generated, without_cache)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_a_uniform_export_loads_in_plain_transformers_with_the_same_logits(
    tmp_path, family, attention
):
    model = tiny_model(family, attention, tied=family != "mistral")
    space = nasframe.convert(model)
    random_importance(space)
    space.sort_parameters()
    uniform = {"model.hidden_size": 24, "model.layers.depth": 2}
    for i in range(3):
        uniform[f"model.layers.{i}.self_attn.num_key_value_heads"] = 2
        uniform[f"model.layers.{i}.self_attn.query_heads_per_group"] = 1
        uniform[f"model.layers.{i}.mlp.intermediate_size"] = 16
    space.select(uniform)
    exported = nasframe.export(space)
    save_pretrained_pruned(exported, tmp_path / "plain")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "plain", attn_implementation=attention
    ).eval()
    config = loaded.config
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (24, 2, 16)
    assert (config.num_attention_heads, config.num_key_value_heads) == (2, 2)
    assert config.head_dim == HEAD_DIM
    assert n_params(loaded) == n_params(exported)
    torch.testing.assert_close(logits(loaded), logits(exported), atol=1e-5, rtol=0)
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["query_heads_per_group", "num_key_value_heads"])
def test_per_layer_head_counts_are_refused_by_save_pretrained(tmp_path, name):
    model = tiny_model()
    space = nasframe.convert(model)
    space.select({f"model.layers.0.self_attn.{name}": 1})
    exported = nasframe.export(space)
    with pytest.raises(nasframe.UserInputError, match="differs between layers"):
        save_pretrained_pruned(exported, tmp_path / "plain")
    assert not (tmp_path / "plain").exists()


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_a_per_layer_config_is_restored_exactly_by_nasframe_load(tmp_path, attention):
    """Heads, KV groups, widths differing per layer, layers and hidden size removed: no plain
    config can hold that, nasframe.save/load does (architecture from the original config)."""
    from nasframe_transformers import clean_config_dict

    model = tiny_model(attention=attention)
    architecture = {"name": "transformers", "kwargs": {"config": clean_config_dict(model.config)}}
    space = nasframe.convert(model)
    random_importance(space)
    space.sort_parameters()
    config = {
        "model.hidden_size": 40,
        "model.layers.depth": 2,
        "model.layers.0.self_attn.num_key_value_heads": 1,
        "model.layers.1.self_attn.query_heads_per_group": 1,
        "model.layers.2.mlp.intermediate_size": 8,
    }
    space.select(config)
    exported = nasframe.export(space)
    kept = space.kept_units()
    assert kept == {
        "model.layers.depth": sorted(space.all_hparams["model.layers.depth"].order[:2].tolist())
    }
    nasframe.save(exported, tmp_path / "nf", space.config(), architecture, kept_units=kept)
    restored = nasframe.load(tmp_path / "nf")
    assert not restored.training
    assert n_params(restored) == n_params(exported)
    torch.testing.assert_close(logits(restored), logits(exported), atol=1e-6, rtol=0)
