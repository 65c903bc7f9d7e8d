"""Phi-3's fused projections (``qkv_proj``, ``gate_up_proj``): the converted model computes
the original's logits at full size, the export computes the dynamic model's at a pruned
config, and a zero gradnas mask is exactly the pruned unit, for every dimension. Eager and
SDPA attention, with and without a padding mask. A tiny random config, no download."""

from __future__ import annotations

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_models.decoders import ids, logits, masked_logits, n_params, random_importance  # noqa: E402
from hf_models.phi3 import tiny_phi3  # noqa: E402

import nasframe  # noqa: E402
from nasframe.app.lm import next_token_loss  # noqa: E402
from nasframe.cost.cost_model import CostModel  # noqa: E402

ATTENTIONS = ["eager", "sdpa"]
LAYERS = "model.layers"


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_full_size_is_unchanged_before_and_after_sorting(attention):
    model = tiny_phi3(attention)
    reference = copy.deepcopy(model)
    space = nasframe.convert(model)
    assert torch.equal(logits(model), logits(reference))
    assert torch.equal(masked_logits(model), masked_logits(reference))
    random_importance(space)
    space.sort_parameters()
    torch.testing.assert_close(logits(model), logits(reference), atol=1e-5, rtol=0)
    torch.testing.assert_close(masked_logits(model), masked_logits(reference), atol=1e-5, rtol=0)


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_export_equals_the_dynamic_model_at_a_pruned_config(attention, seed):
    model = tiny_phi3(attention)
    space = nasframe.convert(model)
    random_importance(space, seed=seed)
    space.sort_parameters()
    generator = torch.Generator().manual_seed(seed)
    config = {
        name: hp.choices[int(torch.randint(len(hp.choices), (1,), generator=generator))]
        for name, hp in space.hparams.items()
    }
    space.select(config)
    exported = nasframe.export(space)
    assert not any(isinstance(m, nasframe.DynamicModule) for m in exported.modules())
    torch.testing.assert_close(logits(exported), logits(model), atol=1e-5, rtol=0)
    torch.testing.assert_close(masked_logits(exported), masked_logits(model), atol=1e-5, rtol=0)
    assert CostModel(space).params() == n_params(exported)


def test_every_dimension_is_searchable():
    space = nasframe.convert(tiny_phi3())
    kinds = {name.rpartition(".")[2] for name in space.hparams}
    assert kinds == {
        "hidden_size",
        "depth",
        "num_key_value_heads",
        "query_heads_per_group",
        "intermediate_size",
    }


def _loss_with_mask(model, space, hparam_name, zero_unit, tokens):
    """The loss with gradnas's masks attached and one unit's mask set to 0."""
    from gradnas import GradientBinarySearcher
    from gradnas.setups import setup_residual_stream

    searcher = GradientBinarySearcher()
    searcher.space = space
    handles, managers = [], []
    for _, module in space.dynamic_modules():
        for manager, handle in searcher._setup(module):
            handles.append(handle)
            managers.append(manager)
    if hparam_name in space.residual_streams:
        manager, handle = setup_residual_stream(
            model, space.all_hparams[hparam_name], space.residual_streams[hparam_name]
        )
        handles.append(handle)
        managers.append(manager)
    try:
        target = space.all_hparams[hparam_name]
        for manager in managers:
            if manager.hparam is target:
                with torch.no_grad():
                    manager.mask.view(-1, target.max)[:, zero_unit] = 0
        with torch.no_grad():
            return next_token_loss(model, tokens).item()
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize(
    "name",
    [
        f"{LAYERS}.depth",
        f"{LAYERS}.1.self_attn.num_key_value_heads",
        f"{LAYERS}.1.self_attn.query_heads_per_group",
        f"{LAYERS}.1.mlp.intermediate_size",
    ],
)
def test_a_zero_gradnas_mask_is_exactly_removing_its_unit(name):
    model = tiny_phi3("eager").double()
    space = nasframe.convert(model)
    tokens = torch.cat([ids(7), ids(8)])
    hparam = space.all_hparams[name]
    masked = _loss_with_mask(model, space, name, 1, tokens)
    importance = torch.ones(hparam.max)
    importance[1] = 0
    hparam.importance = importance
    space.select({name: hparam.max - 1})
    with torch.no_grad():
        pruned = next_token_loss(model, tokens).item()
    assert masked == pytest.approx(pruned, rel=1e-9, abs=1e-12)


def test_the_hidden_size_mask_zeroes_the_channel_in_the_whole_residual_stream():
    model = tiny_phi3("eager").double()
    space = nasframe.convert(model)
    seen = []
    layers = model.get_submodule(LAYERS).all_layers()
    hooks = [
        layer.register_forward_pre_hook(lambda _, args: seen.append(args[0][..., 5].clone()))
        for layer in layers
    ]
    try:
        _loss_with_mask(model, space, "model.hidden_size", 5, ids())
    finally:
        for hook in hooks:
            hook.remove()
    assert len(seen) == len(layers)
    assert all(torch.equal(values, torch.zeros_like(values)) for values in seen)
