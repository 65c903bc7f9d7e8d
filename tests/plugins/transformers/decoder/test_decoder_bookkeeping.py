"""Decoders recognised by their structure: GQA, depth and hidden-size bookkeeping after
pruning, plain transformers directories of uniform results, Gemma's scaled embeddings, an
active sliding window, and the one-line stop for what the description does not understand."""

from __future__ import annotations

import copy
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_models.decoders import (  # noqa: E402
    CONFIGS,
    HEAD_DIM,
    STATES_HEAD_DIM,
    VOCAB,
    ids,
    logits,
    masked_logits,
    n_params,
    random_importance,
    tiny_model,
)
from nasframe_transformers import save_pretrained_pruned  # noqa: E402

import nasframe  # noqa: E402

FAMILIES = sorted(CONFIGS)
GQA = ["gemma3", "qwen3"]


def _layers(model):
    return (
        model.transformer.h
        if hasattr(model, "transformer")
        else (model.model.decoder.layers if hasattr(model.model, "decoder") else model.model.layers)
    )


def _prefix(model):
    return (
        "transformer."
        if hasattr(model, "transformer")
        else ("model.decoder." if hasattr(model.model, "decoder") else "model.")
    )


@pytest.mark.parametrize("family", GQA)
def test_pruning_query_heads_keeps_every_kv_group_balanced(family):
    model = tiny_model(family)  # 3 KV groups of 2 query heads
    space = nasframe.convert(model)
    space.select({"model.layers.1.self_attn.query_heads_per_group": 1})
    exported = nasframe.export(space)
    attention = exported.model.layers[1].self_attn
    assert attention.q_proj.out_features == 3 * HEAD_DIM == attention.o_proj.in_features
    assert attention.k_proj.out_features == attention.v_proj.out_features == 3 * HEAD_DIM
    assert attention.num_key_value_groups == 1
    assert exported.model.layers[0].self_attn.num_key_value_groups == 2
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_pruning_kv_groups_removes_their_query_heads_too(family):
    model = tiny_model(family)
    space = nasframe.convert(model)
    attn = "attn" if family == "gptj" else "self_attn"
    space.select(
        {f"{_prefix(model)}{'h' if family == 'gptj' else 'layers'}.0.{attn}.num_key_value_heads": 1}
    )
    exported = nasframe.export(space)
    attention = getattr(_layers(exported)[0], attn)
    per_group = 2 if family in GQA else 1
    assert attention.k_proj.out_features == attention.v_proj.out_features == HEAD_DIM
    assert attention.q_proj.out_features == per_group * HEAD_DIM
    for name in ("num_heads", "num_attention_heads", "num_key_value_heads"):
        if name in vars(attention):
            assert vars(attention)[name] == (1 if "key_value" in name else per_group)
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)


def test_depth_pruning_renumbers_layers_and_their_types_with_an_active_sliding_window():
    model = tiny_model("gemma3", "eager")  # window 4 < sequence 10
    space = nasframe.convert(model)
    depth = space.hparams["model.layers.depth"]
    depth.importance = torch.tensor([1.0, 3.0, 2.0])  # keep layers 1 and 2
    space.sort_parameters()
    space.select({depth.name: 2})
    exported = nasframe.export(space)
    assert [layer.self_attn.layer_idx for layer in exported.model.layers] == [0, 1]
    assert exported.config.num_hidden_layers == 2
    assert exported.config.layer_types == ["full_attention", "sliding_attention"]
    assert [layer.self_attn.sliding_window for layer in exported.model.layers] == [None, 4]
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)
    torch.testing.assert_close(masked_logits(exported), masked_logits(model), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_size_pruning_prunes_the_whole_residual_stream(family):
    model = tiny_model(family)
    tied = model.lm_head.weight is model.get_input_embeddings().weight
    space = nasframe.convert(model)
    random_importance(space)
    space.sort_parameters()
    space.select({f"{_prefix(model)}hidden_size": 24})
    exported = nasframe.export(space)
    assert exported.get_input_embeddings().weight.shape == (VOCAB, 24)
    assert (exported.lm_head.weight is exported.get_input_embeddings().weight) == tied
    assert exported.lm_head.in_features == 24
    for layer in _layers(exported):
        for module in layer.modules():
            if isinstance(module, torch.nn.Linear):
                assert 24 in (module.in_features, module.out_features)
    assert exported.config.hidden_size == 24
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)


def _uniform(space, model, family):
    layers = len(_layers(model))
    prefix = _prefix(model)
    config = {f"{prefix}{'h' if family == 'gptj' else 'layers'}.depth": layers - 1}
    for name in space.hparams:
        if "intermediate_size" in name:
            config[name] = 16
        elif family in STATES_HEAD_DIM and name.endswith("num_key_value_heads"):
            config[name] = 2
        elif family in STATES_HEAD_DIM and name.endswith("query_heads_per_group"):
            config[name] = 1
    if family in STATES_HEAD_DIM:
        config[f"{prefix}hidden_size"] = 24
    return config


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_a_uniform_export_loads_in_plain_transformers_with_the_same_logits(
    tmp_path, family, attention
):
    model = tiny_model(family, attention)
    space = nasframe.convert(model)
    random_importance(space)
    space.sort_parameters()
    space.select(_uniform(space, model, family))
    exported = nasframe.export(space)
    save_pretrained_pruned(exported, tmp_path / "plain")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "plain", attn_implementation=attention
    ).eval()
    assert loaded.config.num_hidden_layers == 2
    assert n_params(loaded) == n_params(exported)
    if family in STATES_HEAD_DIM:
        config = loaded.config
        assert (config.hidden_size, config.num_attention_heads) == (24, 2)
        assert (config.num_key_value_heads, config.head_dim) == (2, HEAD_DIM)
    torch.testing.assert_close(logits(loaded), logits(exported), atol=1e-5, rtol=0)
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)
    torch.testing.assert_close(masked_logits(loaded), masked_logits(model), atol=1e-5, rtol=0)


def test_gemma_keeps_its_embedding_scale_and_the_plain_export_reproduces_it(tmp_path):
    model = tiny_model("gemma3")
    original_scale = float(model.model.embed_tokens.embed_scale)
    assert original_scale == pytest.approx(math.sqrt(48))
    reference = copy.deepcopy(model)
    space = nasframe.convert(model)
    space.select({"model.hidden_size": 24})  # unsorted: the first 24 channels are kept
    assert float(model.model.embed_tokens.embed_scale) == pytest.approx(original_scale)
    tokens = ids()
    with torch.no_grad():
        embedded = model.model.embed_tokens(tokens)
        full = reference.model.embed_tokens(tokens)
    torch.testing.assert_close(embedded, full[..., :24])
    exported = nasframe.export(space)
    save_pretrained_pruned(exported, tmp_path / "plain")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "plain").eval()
    assert float(loaded.model.embed_tokens.embed_scale) == pytest.approx(math.sqrt(24))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.embed_tokens(tokens), embedded)
    torch.testing.assert_close(logits(loaded), logits(model), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["opt", "gptj"])
def test_a_config_that_derives_head_dim_refuses_a_pruned_hidden_size(tmp_path, family):
    model = tiny_model(family)
    space = nasframe.convert(model)
    assert f"{_prefix(model)}hidden_size" in space.uniform_fixed
    space.select({f"{_prefix(model)}hidden_size": 24})
    exported = nasframe.export(space)
    with pytest.raises(nasframe.UserInputError, match="derives head_dim"):
        save_pretrained_pruned(exported, tmp_path / "plain")


@pytest.mark.parametrize("family", GQA)
def test_generation_with_a_kv_cache_works_after_pruning_layers_and_heads(family):
    model = tiny_model(family)
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
    prompt = ids(rows=1, length=6)
    cached = exported.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=True)
    uncached = exported.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_a_fused_qkv_projection_stops_with_one_line_naming_it():
    # GPT-NeoX interleaves q/k/v per head, a layout not understood yet (Phi-3's is: see
    # test_phi3_*.py).
    config = transformers.GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=40,
        num_hidden_layers=2,
        num_attention_heads=4,
    )
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with pytest.raises(nasframe.UserInputError) as raised:
        nasframe.convert(model)
    message = str(raised.value)
    assert "\n" not in message and "torch.fx" not in message
    assert "gpt_neox.layers.0.attention.query_key_value" in message and "fused" in message


def test_a_module_the_description_does_not_know_is_named():
    model = tiny_model("qwen3")
    model.model.layers[1].extra = torch.nn.Conv1d(48, 48, 1)
    with pytest.raises(nasframe.UserInputError, match=r"model\.layers\.1\.extra \(Conv1d\)"):
        nasframe.convert(model)
