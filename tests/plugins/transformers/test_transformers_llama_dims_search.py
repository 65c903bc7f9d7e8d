"""Searches on Llama-style models with KV groups (uniform sizes in every layer, gradnas scores
for every kind of dimension) and where gradnas puts each mask: zeroing a mask is exactly
removing the units it gates. Tiny randomly initialised configs, no download.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_models.llama_dims import (  # noqa: E402
    ids,
    n_params,
    tiny_model,
)
from hf_models.masks import loss_with_mask, loss_without_unit  # noqa: E402
from nasframe_transformers import save_pretrained_pruned  # noqa: E402

import nasframe  # noqa: E402
from nasframe.app.lm import next_token_loss  # noqa: E402


@pytest.mark.parametrize("algorithm", ["gradnas", "fastnas"])
def test_a_uniform_search_gives_the_same_sizes_in_every_layer(algorithm, tmp_path):
    model = tiny_model()
    before = n_params(model)
    batches = [ids(seed) for seed in range(3)]
    config = {"verbose": False, "uniform": True}
    if algorithm == "gradnas":
        config |= {"data_loader": batches, "loss_func": next_token_loss}
    else:
        config["score_func"] = lambda m: -next_token_loss(m, batches[0]).item()
    space, result = nasframe.search(model, "params=60%", algorithm=algorithm, config=config)
    for kind in ("mlp.intermediate_size", "self_attn.num_key_value_heads"):
        sizes = {value for name, value in result.config.items() if name.endswith(kind)}
        assert len(sizes) == 1, (kind, result.config)
    exported = nasframe.export(space)
    assert n_params(exported) <= 0.6 * before
    save_pretrained_pruned(exported, tmp_path / "plain")  # uniform: accepted


def test_gradnas_scores_every_kind_of_dimension():
    model = tiny_model()
    batches = [ids(seed) for seed in range(2)]
    config = {"data_loader": batches, "loss_func": next_token_loss, "verbose": False}
    space, result = nasframe.search(model, "params=90%", algorithm="gradnas", config=config)
    assert set(result.importance) == set(space.hparams)
    for name, scores in result.importance.items():
        assert torch.isfinite(scores).all() and scores.sum() > 0, name


@pytest.mark.parametrize(
    "hparam_name",
    [
        "model.layers.depth",
        "model.layers.1.self_attn.num_key_value_heads",
        "model.layers.1.self_attn.query_heads_per_group",
        "model.layers.1.mlp.intermediate_size",
    ],
)
def test_a_zero_gradnas_mask_is_exactly_removing_its_unit(hparam_name):
    """The mask multiplies what the unit contributes, so mask 0 == the unit pruned."""
    model = tiny_model().double()
    space = nasframe.convert(model)
    tokens = torch.cat([ids(7), ids(8)])
    unit = 1
    masked = loss_with_mask(model, space, hparam_name, unit, tokens)
    pruned = loss_without_unit(model, space, hparam_name, unit, tokens)
    assert masked == pytest.approx(pruned, rel=1e-9, abs=1e-12)


def test_the_hidden_size_mask_zeroes_the_channel_in_the_whole_residual_stream():
    model = tiny_model().double()
    space = nasframe.convert(model)
    seen = []
    hooks = [
        layer.register_forward_pre_hook(lambda _, args: seen.append(args[0][..., 5].clone()))
        for layer in model.model.layers
    ]
    hooks.append(
        model.model.norm.register_forward_pre_hook(
            lambda _, args: seen.append(args[0][..., 5].clone())
        )
    )
    try:
        loss_with_mask(model, space, "model.hidden_size", 5, ids())
    finally:
        for hook in hooks:
            hook.remove()
    assert len(seen) == 4
    assert all(torch.equal(values, torch.zeros_like(values)) for values in seen)
