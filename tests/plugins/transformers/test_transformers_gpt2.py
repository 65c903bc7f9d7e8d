"""GPT-2 (transformers' Conv1D projections, fused q/k/v): hidden size, heads, FFN width and
depth, export, plain save, and the models that are (and are not) described.

Tiny randomly initialised configs; no download. The whole file is skipped where transformers
is not installed (it is part of the dev extra).
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

transformers = pytest.importorskip("transformers")

from hf_models.gpt2 import (  # noqa: E402
    DEPTH,
    HIDDEN,
    VOCAB,
    heads,
    ids,
    inner,
    logits,
    param_count,
    rank,
    tiny_config,
    tiny_model,
)
from nasframe_transformers import clean_config_dict, save_pretrained_pruned  # noqa: E402
from nasframe_transformers.families.gpt2 import describe_ties  # noqa: E402

import nasframe  # noqa: E402
from nasframe.cost.cost_model import CostModel  # noqa: E402
from nasframe.errors import UserInputError  # noqa: E402
from nasframe.space.dynamic import DynamicModule  # noqa: E402

VARIANTS = {
    "eager": ("eager", {}),
    "sdpa": ("sdpa", {}),
    "eager-upcast-layer-scaled": (
        "eager",
        {"reorder_and_upcast_attn": True, "scale_attn_by_inverse_layer_idx": True},
    ),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_full_size_is_unchanged_and_sorting_keeps_the_function(variant):
    attention, overrides = VARIANTS[variant]
    model = tiny_model(attention, **overrides)
    reference = copy.deepcopy(model)
    space = nasframe.convert(model)
    assert list(space.hparams) == [
        HIDDEN,
        DEPTH,
        *(name for i in range(3) for name in (heads(i), inner(i))),
    ]
    block = model.transformer.h[0]
    assert block.mlp.c_fc.get_hparam("nf") is block.mlp.c_proj.get_hparam("nx")
    assert block.mlp.c_fc.get_hparam("nf") is space.hparams[inner(0)]
    hidden = space.hparams[HIDDEN]
    assert block.attn.get_hparam("hidden_size") is hidden
    assert model.lm_head.get_hparam("in_features") is hidden
    assert model.transformer.wpe.get_hparam("embedding_dim") is hidden
    assert torch.equal(logits(model), logits(reference))
    generator = torch.Generator().manual_seed(2)
    for hparam in space.hparams.values():
        hparam.importance = torch.rand(hparam.max, generator=generator)
    c_attn = block.attn.c_attn.weight.detach().clone()
    space.sort_parameters()
    assert not torch.equal(block.attn.c_attn.weight, c_attn)  # the sort permuted something
    torch.testing.assert_close(logits(model), logits(reference), atol=1e-5, rtol=0)


@functools.cache
def random_space(sort: bool):
    """One converted model per ordering, reused across hypothesis examples (select, then
    export a copy, leave the model untouched); unsorted weights keep scattered units."""
    space = nasframe.convert(tiny_model())
    generator = torch.Generator().manual_seed(3)
    for hparam in space.hparams.values():
        hparam.importance = torch.rand(hparam.max, generator=generator)
    if sort:
        space.sort_parameters()
    return space, CostModel(space)


@settings(max_examples=8, deadline=None)
@given(sort=st.booleans(), data=st.data())
def test_export_equals_the_dynamic_model_and_the_parameter_count(sort, data):
    space, costs = random_space(sort)
    config = {
        name: data.draw(st.sampled_from(hparam.choices), label=name)
        for name, hparam in space.hparams.items()
    }
    space.select(config)
    exported = nasframe.export(space)
    assert not any(isinstance(m, DynamicModule) for m in exported.modules())
    torch.testing.assert_close(logits(exported), logits(space.model), atol=1e-5, rtol=0)
    assert costs.params() == param_count(exported)
    assert exported.lm_head.weight is exported.transformer.wte.weight
    assert exported.transformer.wte.embedding_dim == config[HIDDEN]
    assert exported.config.n_layer == len(exported.transformer.h) == config[DEPTH]
    for i in range(3):  # the attention's widths follow its kept heads
        attention = space.model.transformer.h.all_layers()[i].attn
        assert attention.embed_dim == attention.split_size == 8 * config[heads(i)]
    for block in exported.transformer.h:
        attention = block.attn
        assert attention.embed_dim == attention.split_size == 8 * attention.num_heads
        assert attention.c_attn.nf == 3 * attention.split_size == 3 * attention.c_proj.nx


def test_a_uniform_config_loads_back_with_plain_from_pretrained(tmp_path):
    model = tiny_model()
    space = nasframe.convert(model)
    rank(space, DEPTH, [0, 1, 2])  # drop the last block
    uniform = {HIDDEN: 24, DEPTH: 2} | {heads(i): 3 for i in range(3)}
    space.select(uniform | {inner(i): 40 for i in range(3)})
    exported = nasframe.export(space)
    save_pretrained_pruned(exported, tmp_path / "pruned")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "pruned").eval()
    config = loaded.config
    assert (config.n_embd, config.n_head, config.n_inner, config.n_layer) == (24, 3, 40, 2)
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging dir left
    torch.testing.assert_close(logits(loaded), logits(exported), atol=1e-5, rtol=0)
    torch.testing.assert_close(logits(loaded), logits(model), atol=1e-5, rtol=0)
    assert (model.config.n_embd, model.config.n_inner) == (32, None)  # the original's config


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({inner(0): 16, inner(1): 40}, "n_inner differs between layers"),
        ({heads(0): 2}, "n_head differs between layers"),
        ({HIDDEN: 24}, "head_dim: n_embd 24 is not n_head x head_dim"),
        ({heads(i): 3 for i in range(3)}, "head_dim: n_embd 32 is not n_head x head_dim"),
    ],
)
def test_save_pretrained_refuses_what_a_gpt2_config_cannot_express(tmp_path, config, reason):
    model = tiny_model()
    original = clean_config_dict(model.config)
    space = nasframe.convert(model)
    space.select(config)
    exported = nasframe.export(space)
    with pytest.raises(UserInputError, match=reason):
        save_pretrained_pruned(exported, tmp_path / "plain")
    architecture = {"name": "transformers", "kwargs": {"config": original}}
    nasframe.save(exported, tmp_path / "nf", config, architecture)
    restored = nasframe.load(tmp_path / "nf").eval()  # rebuilt by from_config: training mode
    torch.testing.assert_close(logits(restored), logits(exported), atol=1e-6, rtol=0)


def test_a_per_layer_model_is_rebuilt_from_its_exported_config(tmp_path):
    """The exported config holds the uniform sizes (n_embd, n_head) and the original FFN
    width (``n_inner=None`` would mean 4 x the pruned n_embd), so nasframe.load can rebuild
    the unpruned architecture from it and select the per-layer widths."""
    model = tiny_model()
    space = nasframe.convert(model)
    config = {HIDDEN: 16, inner(0): 16, inner(1): 40} | {heads(i): 2 for i in range(3)}
    space.select(config)
    exported = nasframe.export(space)
    assert (exported.config.n_embd, exported.config.n_head, exported.config.n_inner) == (16, 2, 128)
    with pytest.raises(UserInputError, match="n_inner differs between layers"):
        save_pretrained_pruned(exported, tmp_path / "plain")
    architecture = {
        "name": "transformers",
        "kwargs": {"config": clean_config_dict(exported.config)},
    }
    nasframe.save(exported, tmp_path / "nf", config, architecture)
    restored = nasframe.load(tmp_path / "nf").eval()
    torch.testing.assert_close(logits(restored), logits(exported), atol=1e-6, rtol=0)


def test_hidden_size_pruning_keeps_the_lm_head_tied_to_the_embeddings():
    model = tiny_model()
    space = nasframe.convert(model)
    space.select({HIDDEN: 16})
    exported = nasframe.export(space)
    assert exported.lm_head.weight is exported.transformer.wte.weight
    assert exported.lm_head.weight.shape == (VOCAB, 16)
    with torch.no_grad():
        exported.transformer.wte.weight.mul_(2)  # one parameter: the head follows
    assert torch.equal(exported.lm_head.weight, exported.transformer.wte.weight)


def cached_logits(model, tokens: torch.Tensor, split: int = 5) -> torch.Tensor:
    """Logits of ``tokens`` computed as a prompt and then one continuation, through the cache."""
    with torch.no_grad():
        first = model(tokens[:, :split], use_cache=True)
        second = model(tokens[:, split:], cache=first.cache, use_cache=True)
    return torch.cat([first.logits, second.logits], dim=1)


def test_depth_pruning_removes_whole_blocks_and_renumbers_them():
    model = tiny_model()
    space = nasframe.convert(model)
    rank(space, DEPTH, [2, 0, 1])  # the middle block is the least important
    space.select({DEPTH: 2})
    torch.testing.assert_close(cached_logits(model, ids()), logits(model), atol=1e-5, rtol=0)
    exported = nasframe.export(space)
    blocks = exported.transformer.h
    assert len(blocks) == exported.config.n_layer == 2
    assert [block.attn.layer_idx for block in blocks] == [0, 1]
    assert torch.equal(blocks[1].ln_1.weight, model.transformer.h.all_layers()[2].ln_1.weight)
    all_blocks = model.transformer.h.unit_modules("depth")
    assert [block.attn.layer_idx for block in all_blocks] == [0, 1, 2]  # untouched
    assert param_count(exported) == CostModel(space).params() < param_count(model)
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)
    torch.testing.assert_close(cached_logits(exported, ids()), logits(model), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("kept", "plain"), [([0, 1, 2], True), ([2, 0, 1], False)])
def test_scale_attn_by_inverse_layer_idx_keeps_each_layers_scaling(tmp_path, kept, plain):
    """Every kept layer keeps its original 1 / (index + 1); a plain config is refused when
    renumbering would change it (a middle block removed), and loads when it would not."""
    model = tiny_model("eager", scale_attn_by_inverse_layer_idx=True)
    space = nasframe.convert(model)
    rank(space, DEPTH, kept)
    space.select({DEPTH: 2})
    exported = nasframe.export(space)
    original = [model.transformer.h.all_layers()[i].attn.scaling for i in sorted(kept[:2])]
    assert [block.attn.scaling for block in exported.transformer.h] == original
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)
    if not plain:
        with pytest.raises(UserInputError, match=r"attention scaling: layers now at \[1\]"):
            save_pretrained_pruned(exported, tmp_path / "plain")
        return
    save_pretrained_pruned(exported, tmp_path / "plain")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "plain").eval()
    torch.testing.assert_close(logits(loaded), logits(model), atol=1e-5, rtol=0)


def test_bare_and_classifier_models_are_described_and_export_exactly():
    torch.manual_seed(0)
    bare = transformers.GPT2Model(tiny_config())
    assert "hidden_size" in nasframe.convert(copy.deepcopy(bare)).hparams
    classifier = transformers.GPT2ForSequenceClassification(tiny_config(pad_token_id=0)).eval()
    space = nasframe.convert(classifier)
    assert classifier.score.get_hparam("in_features") is space.hparams[HIDDEN]
    space.select({HIDDEN: 20, heads(0): 1, inner(2): 9})
    exported = nasframe.export(space)
    assert exported.score.weight.shape == (2, 20)
    with torch.no_grad():
        expected = space.model(ids()).logits
        torch.testing.assert_close(exported(ids()).logits, expected, atol=1e-5, rtol=0)


def test_cross_attention_models_are_not_described():
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(tiny_config(add_cross_attention=True))
    assert describe_ties(model) is None
    assert describe_ties(tiny_model()) is not None
