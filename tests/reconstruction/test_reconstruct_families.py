"""Reconstruction on tiny transformers families (Llama, Qwen2, Mistral, GPT-2, BERT): the
maps repaired, the ones skipped, added biases through both saves, and the bias reserve of a
searched Llama."""

from __future__ import annotations

import pytest
import torch
from reconstruction_support import per_target_mse
from torch import nn

import nasframe
from nasframe.app.lm import next_token_loss
from nasframe.errors import UserInputError


def token_batches(vocab: int, count: int = 6) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return [torch.randint(4, vocab, (2, 12), generator=generator) for _ in range(count)]


def logits(model: nn.Module, batches: list) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(batch).logits for batch in batches])


def family_space(family: str):
    """A tiny random model of ``family`` (float64) with its FFN widths and heads pruned the
    same in every layer, and its calibration batches."""
    pytest.importorskip("transformers")
    from hf_models import bert, gpt2, llama

    builders = {"gpt2": gpt2.tiny_model, "bert": bert.tiny_model}
    model = builders.get(family, lambda: llama.tiny_model(family))().double()
    space = nasframe.convert(model)
    pruned = (
        "intermediate_size",
        "n_inner",
        "query_heads_per_group",
        "num_heads",
        "attention_heads",
    )
    config = {
        name: hparam.choices[(len(hparam.choices) - 1) // 2]
        for name, hparam in space.hparams.items()
        if name.endswith(pruned)
    }
    space.select(config)
    return space, token_batches(model.config.vocab_size)


def forward_ids(model: nn.Module, ids: torch.Tensor):
    return model(ids)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2", "bert"])
def test_family_maps_are_repaired_never_worse_and_exported_as_they_run(family):
    space, batches = family_space(family)
    outputs_by_map = {"llama": ("o_proj", "down_proj"), "qwen2": ("o_proj", "down_proj")}
    outputs_by_map |= {"gpt2": ("attn.c_proj", "mlp.c_proj"), "bert": ("output.dense",)}
    none, bias, lsq = (
        per_target_mse(space, batches, forward_ids, mode) for mode in ("none", "bias", "lsq")
    )
    assert none and all(name.endswith(outputs_by_map[family]) for name in none)
    for name in none:
        assert lsq[name] <= bias[name] * (1 + 1e-9) + 1e-15 <= none[name] * (1 + 1e-9) + 2e-15
    report = nasframe.reconstruct(space, batches, forward_ids, "lsq")
    assert sorted(report.reconstructed) == sorted(none)
    exported = nasframe.export(space)
    torch.testing.assert_close(
        logits(exported, batches), logits(space.model, batches), rtol=0, atol=1e-12
    )


def test_maps_of_removed_layers_and_residual_stream_readers_are_skipped_by_a_bias_fold():
    space, batches = family_space("llama")
    space.all_hparams["model.layers.depth"].importance = torch.tensor([0.0, 1.0])  # keep 1
    space.select({"model.layers.depth": 1, "model.hidden_size": 16})
    report = nasframe.reconstruct(space, batches, forward_ids, "bias")
    assert report.reconstructed == [
        "model.layers.1.self_attn.o_proj",
        "model.layers.1.mlp.down_proj",
    ]
    assert "removed by model.layers.depth" in report.skipped["model.layers.0.mlp.down_proj"]
    for reader in ("model.layers.1.mlp.gate_proj", "model.layers.1.self_attn.q_proj"):
        assert "residual stream model.hidden_size" in report.skipped[reader]
    assert "shared with model.embed_tokens" in report.skipped["lm_head"]  # the tied head


def test_least_squares_repairs_the_residual_stream_readers_of_the_kept_layers():
    space, batches = family_space("llama")
    space.all_hparams["model.layers.depth"].importance = torch.tensor([0.0, 1.0])  # keep 1
    space.select({"model.layers.depth": 1, "model.hidden_size": 16})
    report = nasframe.reconstruct(space, batches, forward_ids, "lsq")
    layer = "model.layers.1"
    readers = [f"{layer}.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj")]
    readers += [f"{layer}.mlp.{p}" for p in ("gate_proj", "up_proj")]
    assert report.readers == readers
    assert set(readers) <= set(report.reconstructed)
    assert not set(readers) & set(report.skipped)
    assert "removed by model.layers.depth" in report.skipped["model.layers.0.self_attn.q_proj"]
    assert "shared with model.embed_tokens" in report.skipped["lm_head"]
    # readers are refitted without adding a bias (the writers get theirs, as before)
    assert not any(name.startswith(tuple(readers)) for name in report.added_biases)


def test_llama_saves_added_biases_for_plain_transformers_and_for_nasframe_load(tmp_path):
    transformers = pytest.importorskip("transformers")
    from nasframe_transformers import clean_config_dict, save_pretrained_pruned

    space, batches = family_space("llama")
    architecture = {
        "name": "transformers",
        "kwargs": {"config": clean_config_dict(space.model.config)},
    }
    space.all_hparams["model.layers.depth"].importance = torch.tensor([0.0, 1.0])
    space.select({"model.layers.depth": 1})  # the kept layer is renamed layers.0 on export
    report = nasframe.reconstruct(space, batches, forward_ids, "lsq")
    assert sorted(report.added_biases) == [
        "model.layers.1.mlp.down_proj.bias",
        "model.layers.1.self_attn.o_proj.bias",
    ]
    exported = nasframe.export(space)
    expected = logits(exported, batches)

    nasframe.save(
        exported,
        tmp_path / "nf",
        space.config(),
        architecture,
        kept_units=space.kept_units(),
        added_biases=space.added_biases,
    )
    restored = nasframe.load(tmp_path / "nf")  # rebuilt in float32 from the config
    assert restored.model.layers[0].mlp.down_proj.bias is not None
    torch.testing.assert_close(logits(restored, batches).double(), expected, rtol=0, atol=1e-5)

    parameters = {name: p.clone() for name, p in exported.named_parameters()}
    save_pretrained_pruned(exported, tmp_path / "plain")
    assert dict(exported.named_parameters()).keys() == parameters.keys()  # zeros only in files
    plain, info = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "plain", output_loading_info=True, dtype=torch.float64
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert plain.config.mlp_bias and plain.config.attention_bias
    torch.testing.assert_close(logits(plain.eval(), batches), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("family", ["mistral", "qwen2"])
def test_a_family_without_a_bias_flag_refuses_the_plain_save_by_name(tmp_path, family):
    pytest.importorskip("transformers")
    from nasframe_transformers import save_pretrained_pruned

    space, batches = family_space(family)
    nasframe.reconstruct(space, batches, forward_ids, "bias")
    with pytest.raises(
        UserInputError,
        match=rf"plain {family} config cannot give model\.layers\.0\.mlp\.down_proj the bias.*"
        "still saved by nasframe.save",
    ):
        save_pretrained_pruned(nasframe.export(space), tmp_path / "plain")
    assert not (tmp_path / "plain").exists()


@pytest.mark.parametrize(("percent", "mode"), [(45, "lsq"), (70, "bias"), (95, "lsq")])
def test_the_bias_reserve_bounds_what_reconstruction_adds_to_a_searched_llama(percent, mode):
    pytest.importorskip("transformers")
    from hf_models import llama_dims as llama

    model = llama.tiny_model()
    space = nasframe.convert(model)
    layers = model.config.num_hidden_layers
    # o_proj and down_proj of every layer; the tied lm_head and the readers of the residual
    # stream (q/k/v, gate/up) can never become targets
    reserve = nasframe.bias_reserve(space)
    assert reserve == layers * 2 * model.config.hidden_size
    batches = [llama.ids(seed) for seed in range(2)]
    config = {"data_loader": batches, "loss_func": next_token_loss, "verbose": False}
    before = sum(p.numel() for p in model.parameters())
    limit = before * percent / 100 - reserve
    _, result = nasframe.search(space, f"params={limit}", algorithm="gradnas", config=config)
    report = nasframe.reconstruct(space, batches, forward_ids, mode)
    pruned = nasframe.export(space)
    added = sum(report.added_biases.values())  # full sizes; the export slices them
    kept = sum(p.numel() for p in pruned.parameters())
    assert 0 < added <= reserve
    assert result.cost_after < kept <= result.cost_after + added
    assert kept <= before * percent / 100
