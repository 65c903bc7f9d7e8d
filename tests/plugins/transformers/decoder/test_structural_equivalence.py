"""Decoders recognised by their structure (every family of ``hf_models.structural``: Qwen3,
Gemma 3, OPT, GPT-J, Phi-3, GPT-NeoX, OLMo 2/3, Gemma 2, and Starcoder2, Granite, SmolLM3,
OLMo, Nemotron, which no code names): the converted model computes the original's logits at
full size, the export computes the dynamic model's at a pruned config (and the cost
model counts its parameters), and a zero gradnas mask is exactly the pruned unit. Every
attention implementation transformers runs the family with, with and without a left-padded
attention mask. Tiny random configs, no download."""

from __future__ import annotations

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_models.decoders import ids, logits, masked_logits, n_params, random_importance  # noqa: E402
from hf_models.masks import loss_with_mask, loss_without_unit  # noqa: E402
from hf_models.structural import SPECS, tiny_model  # noqa: E402

import nasframe  # noqa: E402
from nasframe.cost.cost_model import CostModel  # noqa: E402

FAMILY_ATTENTIONS = [(f, a) for f, spec in sorted(SPECS.items()) for a in spec.attentions]


@pytest.mark.parametrize(("family", "attention"), FAMILY_ATTENTIONS)
def test_full_size_is_unchanged_before_and_after_sorting(family, attention):
    model = tiny_model(family, attention)
    reference = copy.deepcopy(model)
    space = nasframe.convert(model)
    assert torch.equal(logits(model), logits(reference))
    assert torch.equal(masked_logits(model), masked_logits(reference))
    random_importance(space)
    space.sort_parameters()
    torch.testing.assert_close(logits(model), logits(reference), atol=1e-5, rtol=0)
    torch.testing.assert_close(masked_logits(model), masked_logits(reference), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("family", "attention"), FAMILY_ATTENTIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_export_equals_the_dynamic_model_at_a_pruned_config(family, attention, seed):
    model = tiny_model(family, attention)
    before = n_params(model)
    space = nasframe.convert(model)
    random_importance(space, seed=seed)
    space.sort_parameters()
    generator = torch.Generator().manual_seed(seed)
    config = {
        name: hp.choices[int(torch.randint(len(hp.choices) - 1, (1,), generator=generator))]
        for name, hp in space.hparams.items()
    }  # every dimension below its full size
    space.select(config)
    exported = nasframe.export(space)
    assert not any(isinstance(m, nasframe.DynamicModule) for m in exported.modules())
    assert n_params(exported) < before
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)
    torch.testing.assert_close(masked_logits(exported), masked_logits(model), atol=1e-5, rtol=0)
    assert CostModel(space).params() == n_params(exported)


@pytest.mark.parametrize("family", sorted(SPECS))
def test_every_dimension_is_searchable(family):
    spec = SPECS[family]
    space = nasframe.convert(tiny_model(family, spec.attentions[0]))
    kinds = {name.rpartition(".")[2] for name in space.hparams}
    heads = {"num_key_value_heads", "query_heads_per_group"} if spec.heads_prunable else set()
    if not spec.gqa:
        heads.discard("query_heads_per_group")  # one query head per KV group
    assert kinds == {"hidden_size", "depth", "intermediate_size", *heads}


def _hparam_name(space, spec, kind):
    if kind == "depth":
        return f"{spec.layers}.depth"
    suffix = "intermediate_size" if kind == "ffn" else kind
    prefix = f"{spec.layers}.1."
    return next((n for n in space.hparams if n.startswith(prefix) and n.endswith(suffix)), None)


@pytest.mark.parametrize("family", sorted(SPECS))
@pytest.mark.parametrize("kind", ["depth", "num_key_value_heads", "query_heads_per_group", "ffn"])
def test_a_zero_gradnas_mask_is_exactly_removing_its_unit(family, kind):
    spec = SPECS[family]
    model = tiny_model(family, "eager").double()
    space = nasframe.convert(model)
    name = _hparam_name(space, spec, kind)
    if name is None:
        assert kind in ("num_key_value_heads", "query_heads_per_group")
        assert not spec.heads_prunable or (kind == "query_heads_per_group" and not spec.gqa)
        pytest.skip(f"{family}'s {kind} is not searchable")
    tokens = torch.cat([ids(7), ids(8)])
    masked = loss_with_mask(model, space, name, 1, tokens)
    pruned = loss_without_unit(model, space, name, 1, tokens)
    assert masked == pytest.approx(pruned, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("family", sorted(SPECS))
def test_the_hidden_size_mask_zeroes_the_channel_in_the_whole_residual_stream(family):
    spec = SPECS[family]
    model = tiny_model(family, "eager").double()
    space = nasframe.convert(model)
    seen = []
    layers = model.get_submodule(spec.layers).all_layers()
    hooks = [
        layer.register_forward_pre_hook(lambda _, args: seen.append(args[0][..., 5].clone()))
        for layer in layers
    ]
    try:
        loss_with_mask(model, space, f"{spec.prefix}hidden_size", 5, ids())
    finally:
        for hook in hooks:
            hook.remove()
    assert len(seen) == len(layers)
    assert all(torch.equal(values, torch.zeros_like(values)) for values in seen)
