"""Decoders recognised by their structure (every family of ``hf_models.structural``): head,
depth and hidden-size bookkeeping after pruning (balanced KV groups, a fused projection's
rows and each attention's config following the kept heads, renumbered layers whose types and
sliding windows follow them, the whole residual stream), plain transformers directories of
uniform results, the refusal of a hidden size a derived head_dim cannot hold, and generation
with a KV cache after pruning. Tiny random configs, no download."""

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
from hf_models.structural import HEAD_DIM, SPECS, head_counts, tiny_model  # noqa: E402
from nasframe_transformers import save_pretrained_pruned  # noqa: E402

import nasframe  # noqa: E402

FAMILIES = sorted(SPECS)
PRUNABLE_HEADS = sorted(f for f, spec in SPECS.items() if spec.heads_prunable)
GQA = sorted(f for f in PRUNABLE_HEADS if SPECS[f].gqa)
FAMILY_ATTENTIONS = [(f, a) for f in FAMILIES for a in SPECS[f].attentions]


def _attention(model, family, index):
    return model.get_submodule(SPECS[family].attention_path(index))


def _rows(attention, spec):
    """(query, key, value, output-input) widths of an exported attention; a fused
    projection's "value" width is all its rows."""
    if spec.fused == "qkv_proj":  # query rows, then key rows, then value rows
        fused, output = attention.qkv_proj.out_features, attention.o_proj.in_features
        return output, (fused - output) // 2, fused, output
    if spec.fused == "query_key_value":  # [query, key, value] rows per head
        fused = attention.query_key_value.out_features
        return fused // 3, fused // 3, fused, attention.dense.in_features
    output = attention.o_proj if hasattr(attention, "o_proj") else attention.out_proj
    return (
        attention.q_proj.out_features,
        attention.k_proj.out_features,
        attention.v_proj.out_features,
        output.in_features,
    )


@pytest.mark.parametrize("family", GQA)
def test_pruning_query_heads_keeps_every_kv_group_balanced(family):
    spec = SPECS[family]
    model = tiny_model(family, spec.attentions[0])
    heads, kv = head_counts(model)
    space = nasframe.convert(model)
    space.select({f"{spec.attention_path(1)}.query_heads_per_group": 1})
    exported = nasframe.export(space)
    attention = _attention(exported, family, 1)
    query, key, value, output = _rows(attention, spec)
    assert query == kv * HEAD_DIM == output
    assert key == kv * HEAD_DIM
    assert value == (3 * kv if spec.fused else kv) * HEAD_DIM  # a fused one holds q, k, v
    assert attention.num_key_value_groups == 1
    assert _attention(exported, family, 0).num_key_value_groups == heads // kv
    if spec.fused == "qkv_proj":  # Phi-3 splits qkv_proj by its config's head counts
        assert attention.config.num_attention_heads == kv
        assert _attention(exported, family, 0).config.num_attention_heads == heads
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", PRUNABLE_HEADS)
def test_pruning_kv_groups_removes_their_query_heads_too(family):
    spec = SPECS[family]
    model = tiny_model(family, spec.attentions[0])
    heads, kv = head_counts(model)
    per_group = heads // kv
    space = nasframe.convert(model)
    space.select({f"{spec.attention_path(0)}.num_key_value_heads": 1})
    exported = nasframe.export(space)
    attention = _attention(exported, family, 0)
    query, key, value, output = _rows(attention, spec)
    assert query == output == per_group * HEAD_DIM
    assert key == HEAD_DIM
    assert value == ((per_group + 2) if spec.fused else 1) * HEAD_DIM
    for name in ("num_heads", "num_attention_heads", "num_key_value_heads"):
        if name in vars(attention):
            assert vars(attention)[name] == (1 if "key_value" in name else per_group)
    if spec.fused == "qkv_proj":
        counts = (attention.config.num_attention_heads, attention.config.num_key_value_heads)
        assert counts == (per_group, 1)
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)
    torch.testing.assert_close(masked_logits(exported), masked_logits(model), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_depth_pruning_renumbers_layers_and_their_types(family):
    spec = SPECS[family]
    model = tiny_model(family, "eager")
    count = model.config.num_hidden_layers
    types = getattr(model.config, "layer_types", None)
    window = getattr(model.config, "sliding_window", None)
    space = nasframe.convert(model)
    depth = space.hparams[f"{spec.layers}.depth"]
    depth.importance = torch.arange(count, dtype=torch.float) + 1.0  # keep the last layers
    space.sort_parameters()
    space.select({depth.name: count - 1})
    exported = nasframe.export(space)
    layers = exported.get_submodule(spec.layers)
    assert [getattr(layer, spec.attention).layer_idx for layer in layers] == list(range(count - 1))
    assert exported.config.num_hidden_layers == count - 1
    if types is not None:
        assert exported.config.layer_types == list(types[1:])
        if "sliding_attention" in types:  # each kept layer keeps its own window
            windows = [getattr(layer, spec.attention).sliding_window for layer in layers]
            assert windows == [window if t == "sliding_attention" else None for t in types[1:]]
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)
    torch.testing.assert_close(masked_logits(exported), masked_logits(model), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_size_pruning_prunes_the_whole_residual_stream(family):
    spec = SPECS[family]
    model = tiny_model(family, spec.attentions[0])
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    space = nasframe.convert(model)
    random_importance(space)
    space.sort_parameters()
    space.select({f"{spec.prefix}hidden_size": 24})
    exported = nasframe.export(space)
    assert exported.get_input_embeddings().weight.shape == (VOCAB, 24)
    head = exported.get_output_embeddings()
    assert (head.weight is exported.get_input_embeddings().weight) == tied
    assert head.in_features == 24
    for layer in exported.get_submodule(spec.layers):
        for module in layer.modules():
            if isinstance(module, torch.nn.Linear):
                assert 24 in (module.in_features, module.out_features)
    assert exported.config.hidden_size == 24
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)


def _uniform(space, model, spec):
    """One KV group fewer and one query head per group where the config states head_dim
    (with hidden size 24), FFN 16, one layer fewer."""
    config = {f"{spec.layers}.depth": model.config.num_hidden_layers - 1}
    _, kv = head_counts(model)
    for name in space.hparams:
        if "intermediate_size" in name:
            config[name] = 16
        elif spec.states_head_dim and name.endswith("num_key_value_heads"):
            config[name] = kv - 1
        elif spec.states_head_dim and name.endswith("query_heads_per_group"):
            config[name] = 1
    if spec.states_head_dim:
        config[f"{spec.prefix}hidden_size"] = 24
    return config


@pytest.mark.parametrize(("family", "attention"), FAMILY_ATTENTIONS)
def test_a_uniform_export_loads_in_plain_transformers_with_the_same_logits(
    tmp_path, family, attention
):
    spec = SPECS[family]
    model = tiny_model(family, attention)
    _, kv = head_counts(model)
    space = nasframe.convert(model)
    if not spec.states_head_dim:  # head_dim = hidden_size / num_attention_heads
        assert f"{spec.prefix}hidden_size" in space.uniform_fixed
    random_importance(space)
    space.sort_parameters()
    space.select(_uniform(space, model, spec))
    exported = nasframe.export(space)
    for layer in exported.get_submodule(spec.layers):  # every attention sees the model config
        config = vars(getattr(layer, spec.attention)).get("config", exported.config)
        assert config is exported.config
    save_pretrained_pruned(exported, tmp_path / "plain")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "plain", attn_implementation=attention
    ).eval()
    assert loaded.config.num_hidden_layers == model.config.num_hidden_layers - 1
    assert n_params(loaded) == n_params(exported)
    if hasattr(loaded.config, "intermediate_size"):
        assert loaded.config.intermediate_size == 16
    if spec.states_head_dim:
        config = loaded.config
        assert (config.hidden_size, config.num_attention_heads) == (24, kv - 1)
        assert (config.num_key_value_heads, config.head_dim) == (kv - 1, HEAD_DIM)
    torch.testing.assert_close(logits(loaded), logits(exported), atol=1e-5, rtol=0)
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)
    torch.testing.assert_close(masked_logits(loaded), masked_logits(model), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", sorted(f for f in FAMILIES if not SPECS[f].states_head_dim))
def test_a_config_that_derives_head_dim_refuses_a_pruned_hidden_size(tmp_path, family):
    spec = SPECS[family]
    model = tiny_model(family, spec.attentions[0])
    space = nasframe.convert(model)
    assert f"{spec.prefix}hidden_size" in space.uniform_fixed
    space.select({f"{spec.prefix}hidden_size": 24})
    exported = nasframe.export(space)
    with pytest.raises(nasframe.UserInputError, match="derives head_dim"):
        save_pretrained_pruned(exported, tmp_path / "plain")


@pytest.mark.parametrize("family", FAMILIES)
def test_generation_with_a_kv_cache_works_after_pruning_layers_and_heads(family):
    spec = SPECS[family]
    model = tiny_model(family, spec.attentions[0])
    count, (_, kv) = model.config.num_hidden_layers, head_counts(model)
    space = nasframe.convert(model)
    random_importance(space)
    space.sort_parameters()
    config = {f"{spec.layers}.depth": count - 1}
    config |= {n: 16 for n in space.hparams if n.endswith("intermediate_size")}
    if spec.heads_prunable:
        config[f"{spec.attention_path(0)}.num_key_value_heads"] = kv - 1
    if spec.heads_prunable and spec.gqa:
        config[f"{spec.attention_path(count - 1)}.query_heads_per_group"] = 1
    space.select(config)
    exported = nasframe.export(space)
    prompt = ids(rows=1, length=6)
    cached = exported.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=True)
    uncached = exported.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
