"""Llama-style transformers models (Llama, Mistral, Qwen2): FFN width per layer, export, search.

Tiny randomly initialised configs; no download. The whole file is skipped where transformers
is not installed (it is part of the dev extra).
"""

from __future__ import annotations

import copy
import random

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_models.llama import FAMILIES, ids, logits, tiny_model  # noqa: E402
from nasframe_transformers import clean_config_dict, save_pretrained_pruned  # noqa: E402

import nasframe  # noqa: E402
from nasframe.app.lm import next_token_loss  # noqa: E402
from nasframe.errors import UserInputError  # noqa: E402


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_ffn_width_per_layer_is_searchable_and_full_size_is_unchanged(family, attention):
    model = tiny_model(family, attention)
    reference = copy.deepcopy(model)
    space = nasframe.convert(model)
    per_layer = ["self_attn.num_key_value_heads", "self_attn.query_heads_per_group"]
    per_layer.append("mlp.intermediate_size")
    assert list(space.hparams) == [
        "model.hidden_size",
        "model.layers.depth",
        *(f"model.layers.{i}.{name}" for i in range(2) for name in per_layer),
    ]
    layer = model.model.layers[0].mlp
    hparam = space.hparams["model.layers.0.mlp.intermediate_size"]
    assert layer.gate_proj.get_hparam("out_features") is hparam
    assert layer.up_proj.get_hparam("out_features") is hparam
    assert layer.down_proj.get_hparam("in_features") is hparam
    assert torch.equal(logits(model, ids()), logits(reference, ids()))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_export_equals_the_dynamic_model_and_keeps_tied_embeddings(family):
    model = tiny_model(family)
    space = nasframe.convert(model)
    rng = random.Random(0)
    for hparam in space.hparams.values():
        hparam.importance = torch.rand(hparam.max, generator=torch.Generator().manual_seed(2))
    space.sort_parameters()
    for _ in range(3):
        space.sample(rng)
        exported = nasframe.export(space)
        torch.testing.assert_close(logits(exported, ids()), logits(model, ids()), atol=1e-5, rtol=0)
        assert exported.lm_head.weight is exported.model.embed_tokens.weight
        for index, layer in enumerate(exported.model.layers):
            width = space.config()[f"model.layers.{index}.mlp.intermediate_size"]
            assert layer.mlp.down_proj.in_features == width == layer.mlp.gate_proj.out_features


@pytest.mark.parametrize("tied", [True, False])
def test_a_uniform_config_loads_back_with_plain_from_pretrained(tmp_path, tied):
    model = tiny_model("llama", tied=tied)
    space = nasframe.convert(model)
    space.select({name: 24 for name in space.hparams if name.endswith("intermediate_size")})
    exported = nasframe.export(space)
    save_pretrained_pruned(exported, tmp_path / "pruned")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "pruned").eval()
    assert loaded.config.intermediate_size == 24
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging dir left
    torch.testing.assert_close(logits(loaded, ids()), logits(exported, ids()), atol=1e-5, rtol=0)


def test_a_per_layer_config_is_refused_by_save_pretrained_and_restored_by_nasframe(tmp_path):
    model = tiny_model("qwen2")
    space = nasframe.convert(model)
    config = {
        "model.layers.0.mlp.intermediate_size": 16,
        "model.layers.1.mlp.intermediate_size": 40,
    }
    space.select(config)
    exported = nasframe.export(space)
    with pytest.raises(UserInputError, match="intermediate_size differs between layers"):
        save_pretrained_pruned(exported, tmp_path / "plain")
    architecture = {
        "name": "transformers",
        "kwargs": {"config": clean_config_dict(exported.config)},
    }
    nasframe.save(exported, tmp_path / "nf", config, architecture)
    restored = nasframe.load(tmp_path / "nf")
    torch.testing.assert_close(logits(restored, ids()), logits(exported, ids()), atol=1e-6, rtol=0)


@pytest.mark.parametrize("algorithm", ["gradnas", "fastnas"])
def test_a_search_meets_its_params_constraint(algorithm):
    model = tiny_model("llama")
    before = sum(p.numel() for p in model.parameters())
    batches = [ids(seed) for seed in range(4)]
    if algorithm == "gradnas":
        config = {"data_loader": batches, "loss_func": next_token_loss, "verbose": False}
    else:

        def score(m):
            return -next_token_loss(m, batches[0]).item()

        config = {"score_func": score, "verbose": False}
    space, result = nasframe.search(
        model, "params=90%", algorithm=algorithm, config=config, rules={"*": {"divisor": 8}}
    )
    exported = nasframe.export(space)
    kept = sum(p.numel() for p in exported.parameters())
    assert kept <= 0.9 * before and kept == result.cost_after
    assert all(value % 8 == 0 for value in result.config.values())


def test_gradnas_masks_the_ffn_after_the_gated_product():
    """The FFN mask sits on down_proj's input, after the gated product: zeroing that unit's
    down_proj column changes the loss by about minus its mask gradient (first order)."""
    from gradnas.setups import setup_linear_input

    model = tiny_model("llama").double()
    nasframe.convert(model)
    mlp = model.model.layers[0].mlp
    manager, handle = setup_linear_input(mlp.down_proj)
    loss = next_token_loss(model, ids())
    loss.backward()
    handle.remove()
    assert manager.mask.grad is not None and manager.mask.grad.shape == (48,)
    unit = int(manager.mask.grad.abs().argmax())
    with torch.no_grad():
        mlp.down_proj.weight[:, unit] = 0
        changed = next_token_loss(model, ids())
    assert (changed - loss).item() == pytest.approx(-manager.mask.grad[unit].item(), rel=0.2)
