"""Decoders recognised by their structure (Qwen3, Gemma 3, OPT, GPT-J): the converted model
computes the original's logits at full size, the export computes the dynamic model's at a
pruned config, and a zero gradnas mask is exactly the pruned unit. Eager and SDPA attention,
with and without a padding mask. Tiny random configs, no download."""

from __future__ import annotations

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_models.decoders import (  # noqa: E402
    CONFIGS,
    ids,
    logits,
    masked_logits,
    n_params,
    random_importance,
    tiny_model,
)

import nasframe  # noqa: E402
from nasframe.app.lm import next_token_loss  # noqa: E402
from nasframe.cost.cost_model import CostModel  # noqa: E402

FAMILIES = sorted(CONFIGS)
ATTENTIONS = ["eager", "sdpa"]


def _base(model):
    return model.transformer if hasattr(model, "transformer") else model.model


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("attention", ATTENTIONS)
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


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_export_equals_the_dynamic_model_at_a_pruned_config(family, attention, seed):
    model = tiny_model(family, attention)
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


@pytest.mark.parametrize("family", FAMILIES)
def test_every_dimension_is_searchable(family):
    space = nasframe.convert(tiny_model(family))
    kinds = {name.rpartition(".")[2] for name in space.hparams}
    assert kinds == {
        "hidden_size",
        "depth",
        "num_key_value_heads",
        "query_heads_per_group",
        "intermediate_size",
    } - ({"query_heads_per_group"} if family in ("opt", "gptj") else set())


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


def _layer_path(model):
    return (
        "transformer.h"
        if hasattr(model, "transformer")
        else ("model.decoder.layers" if hasattr(model.model, "decoder") else "model.layers")
    )


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["depth", "num_key_value_heads", "query_heads_per_group", "ffn"])
def test_a_zero_gradnas_mask_is_exactly_removing_its_unit(family, kind):
    model = tiny_model(family, "eager").double()
    space = nasframe.convert(model)
    layers = _layer_path(model)
    if kind == "depth":
        name = f"{layers}.depth"
    elif kind == "ffn":
        name = next(
            n for n in space.hparams if n.startswith(f"{layers}.1.") and "intermediate" in n
        )
    else:
        name = next(
            (n for n in space.hparams if n.startswith(f"{layers}.1.") and n.endswith(kind)), None
        )
        if name is None:
            pytest.skip(f"{family} has one query head per KV group")
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


@pytest.mark.parametrize("family", FAMILIES)
def test_the_hidden_size_mask_zeroes_the_channel_in_the_whole_residual_stream(family):
    model = tiny_model(family, "eager").double()
    space = nasframe.convert(model)
    hidden = next(n for n in space.hparams if n.endswith("hidden_size"))
    seen = []
    layers = model.get_submodule(_layer_path(model)).all_layers()
    hooks = [
        layer.register_forward_pre_hook(lambda _, args: seen.append(args[0][..., 5].clone()))
        for layer in layers
    ]
    try:
        _loss_with_mask(model, space, hidden, 5, ids())
    finally:
        for hook in hooks:
            hook.remove()
    assert len(seen) == len(layers)
    assert all(torch.equal(values, torch.zeros_like(values)) for values in seen)
    assert _base(model) is not None
