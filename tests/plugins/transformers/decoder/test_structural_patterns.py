"""What each family brings, checked on its own: Phi-3's fused ``qkv_proj`` and
``gate_up_proj`` rows, Gemma 3's scaled embeddings, GPT-NeoX's [q, k, v] rows per head,
partial rotary, biases and untied head; OLMo 2's heads kept whole (one log line) and its norms
after each block; Gemma 2's soft-capping; sliding windows that are really active; the
per-layer config lists (SmolLM3's NoPE layers) and the width a norm states (OLMo's LayerNorm
without parameters, Nemotron's LayerNorm subclass) following the pruning. Tiny random
configs, no download."""

from __future__ import annotations

import copy
import logging
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_models.decoders import ids, logits, masked_logits, random_importance  # noqa: E402
from hf_models.structural import HEAD_DIM, tiny_model  # noqa: E402
from nasframe_transformers import save_pretrained_pruned  # noqa: E402
from nasframe_transformers.families.decoder.probe import find_post_norms  # noqa: E402
from nasframe_transformers.families.decoder.structure import recognise  # noqa: E402

import nasframe  # noqa: E402

NEOX = ["gpt_neox", "gpt_neox_sequential"]
SLIDING = ["gemma2", "olmo3", "starcoder2"]


def test_phi3_keeps_the_query_key_value_rows_of_the_kept_heads_in_order():
    model = tiny_model("phi3")  # 6 query heads in 3 KV groups
    full = model.model.layers[0].self_attn.qkv_proj.weight.detach().clone()
    space = nasframe.convert(model)
    space.select({"model.layers.0.self_attn.num_key_value_heads": 2})  # KV groups 0 and 1 kept
    exported = nasframe.export(space)
    kept = exported.model.layers[0].self_attn.qkv_proj.weight
    q, kv = 6 * HEAD_DIM, 3 * HEAD_DIM
    expected = torch.cat(
        [full[: 4 * HEAD_DIM], full[q : q + 2 * HEAD_DIM], full[q + kv : q + kv + 2 * HEAD_DIM]]
    )
    assert torch.equal(kept, expected)


def test_phi3_pruning_the_ffn_keeps_gate_and_up_rows_of_the_same_units():
    model = tiny_model("phi3")
    full = model.model.layers[2].mlp.gate_up_proj.weight.detach().clone()
    space = nasframe.convert(model)
    space.select({"model.layers.2.mlp.intermediate_size": 16})
    exported = nasframe.export(space)
    mlp = exported.model.layers[2].mlp
    assert mlp.gate_up_proj.out_features == 32 and mlp.down_proj.in_features == 16
    assert torch.equal(mlp.gate_up_proj.weight, torch.cat([full[:16], full[40:56]]))
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)


def test_gemma3_keeps_its_embedding_scale_and_the_plain_export_reproduces_it(tmp_path):
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


@pytest.mark.parametrize("family", NEOX)
def test_neox_keeps_the_query_key_value_rows_of_the_kept_heads_in_order(family):
    model = tiny_model(family)
    attention = model.gpt_neox.layers[0].attention
    assert attention.rotary_ndims == HEAD_DIM // 2  # partial rotary
    assert model.gpt_neox.layers[0].use_parallel_residual == (family == "gpt_neox")
    assert model.get_output_embeddings().weight is not model.gpt_neox.embed_in.weight
    rows = attention.query_key_value.weight.detach().clone()
    bias = attention.query_key_value.bias.detach().clone()
    columns = attention.dense.weight.detach().clone()
    space = nasframe.convert(model)
    space.select({"gpt_neox.layers.0.attention.num_key_value_heads": 2})  # heads 0 and 1
    exported = nasframe.export(space)
    kept = exported.gpt_neox.layers[0].attention
    assert torch.equal(kept.query_key_value.weight, rows[: 2 * 3 * HEAD_DIM])
    assert torch.equal(kept.query_key_value.bias, bias[: 2 * 3 * HEAD_DIM])
    assert torch.equal(kept.dense.weight, columns[:, : 2 * HEAD_DIM])
    assert kept.rotary_ndims == HEAD_DIM // 2 and kept.head_size == HEAD_DIM
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["olmo2", "olmo3"])
def test_olmo_keeps_its_heads_whole_says_so_once_and_prunes_the_rest(family, caplog):
    model = tiny_model(family)
    q_norm = model.model.layers[0].self_attn.q_norm.weight.detach().clone()
    with caplog.at_level(logging.WARNING):
        space = nasframe.convert(model)
    said = [r.getMessage() for r in caplog.records if "attention head" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0]
    assert "q_norm/k_norm" in said[0] and "whole" in said[0]
    more = model.config.num_hidden_layers - 1
    assert f"{type(model).__name__} whole (model.layers.0.self_attn and {more} more)" in said[0]
    assert not any("heads" in name for name in space.all_hparams)
    random_importance(space)
    space.sort_parameters()
    space.select({"model.hidden_size": 24, "model.layers.1.mlp.intermediate_size": 8})
    exported = nasframe.export(space)
    assert torch.equal(exported.model.layers[0].self_attn.q_norm.weight, q_norm)
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)


def test_olmo2_norms_after_each_block_write_the_residual_stream():
    model = tiny_model("olmo2")
    post = find_post_norms(model, recognise(model))
    assert post == {"attention": "post_attention_layernorm", "mlp": "post_feedforward_layernorm"}


def test_gemma2_soft_caps_its_logits_and_attention_scores():
    model = tiny_model("gemma2", "eager")
    cap = model.config.final_logit_softcapping
    assert logits(model).abs().max() <= cap
    # The same weights without either cap: both change what the model computes.
    assert logits(tiny_model("gemma2", "eager", final_logit_softcapping=None)).abs().max() > cap
    uncapped = tiny_model("gemma2", "eager", attn_logit_softcapping=None)
    assert not torch.allclose(logits(uncapped), logits(model), atol=1e-3)
    space = nasframe.convert(model)
    random_importance(space)
    space.sort_parameters()
    space.select({"model.hidden_size": 24, "model.layers.1.self_attn.num_key_value_heads": 1})
    exported = nasframe.export(space)
    assert exported.config.final_logit_softcapping == cap
    assert logits(exported).abs().max() <= cap
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)


def test_gemma2_with_sdpa_where_transformers_runs_it():
    try:
        model = tiny_model("gemma2", "sdpa")
    except ValueError as error:  # transformers refuses SDPA with soft-capping
        assert "scaled_dot_product_attention" in str(error)
        pytest.skip("this transformers runs Gemma 2 (soft-capping) with eager attention only")
    reference = copy.deepcopy(model)
    space = nasframe.convert(model)
    assert torch.equal(logits(model), logits(reference))
    space.select({"model.layers.0.self_attn.query_heads_per_group": 1})
    exported = nasframe.export(space)
    torch.testing.assert_close(masked_logits(exported), masked_logits(model), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", SLIDING)
def test_the_sliding_window_is_active_on_the_test_inputs(family):
    model = tiny_model(family, "eager")
    wide = tiny_model(family, "eager", sliding_window=64)  # the same weights, no window
    assert not torch.allclose(logits(wide), logits(model), atol=1e-4)
    assert not torch.allclose(masked_logits(wide), masked_logits(model), atol=1e-4)


def test_smollm3_nope_layers_follow_the_kept_layers():
    model = tiny_model("smollm3")
    flags = list(model.config.no_rope_layers)
    assert flags == [1, 0, 1]  # the middle layer has no rotary embedding
    space = nasframe.convert(model)
    depth = space.hparams["model.layers.depth"]
    depth.importance = torch.tensor([1.0, 3.0, 2.0])  # keep layers 1 and 2
    space.sort_parameters()
    space.select({depth.name: 2})
    exported = nasframe.export(space)
    assert exported.config.no_rope_layers == flags[1:]
    assert [layer.self_attn.use_rope for layer in exported.model.layers] == flags[1:]
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("family", "norm"), [("olmo", "OlmoLayerNorm"), ("nemotron", None)])
def test_a_norm_that_states_its_width_states_the_kept_width(family, norm):
    model = tiny_model(family)
    layer_norm = model.model.layers[0].input_layernorm
    if norm is not None:
        assert type(layer_norm).__name__ == norm and not list(layer_norm.parameters())
    space = nasframe.convert(model)
    random_importance(space)
    space.sort_parameters()
    space.select({"model.hidden_size": 24})
    exported = nasframe.export(space)
    for module in (exported.model.layers[0].input_layernorm, exported.model.norm):
        assert type(module) is type(layer_norm)
        assert tuple(module.normalized_shape) == (24,)
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)
