"""Searches on decoders recognised by their structure (every family of
``hf_models.structural``): gradnas scores every dimension, a uniform search of either
algorithm writes a plain transformers directory that loads with the same logits, and a
per-layer result is restored exactly by nasframe.load. Tiny random configs, no download."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_models.decoders import ids, logits, n_params  # noqa: E402
from hf_models.structural import SPECS, tiny_model  # noqa: E402
from nasframe_transformers import clean_config_dict, save_pretrained_pruned  # noqa: E402

import nasframe  # noqa: E402
from nasframe.app.lm import next_token_loss  # noqa: E402

FAMILIES = sorted(SPECS)


def _model(family):
    return tiny_model(family, SPECS[family].attentions[0])


@pytest.mark.parametrize("family", FAMILIES)
def test_gradnas_scores_every_dimension(family):
    model = _model(family)
    batches = [ids(seed) for seed in range(2)]
    config = {"data_loader": batches, "loss_func": next_token_loss, "verbose": False}
    space, result = nasframe.search(model, "params=90%", algorithm="gradnas", config=config)
    assert set(result.importance) == set(space.hparams)
    for name, scores in result.importance.items():
        assert torch.isfinite(scores).all() and scores.sum() > 0, name


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("algorithm", ["gradnas", "fastnas"])
def test_a_uniform_search_writes_a_plain_directory(tmp_path, family, algorithm):
    model = _model(family)
    before = n_params(model)
    batches = [ids(seed) for seed in range(2)]
    config = {"verbose": False, "uniform": True}
    if algorithm == "gradnas":
        config |= {"data_loader": batches, "loss_func": next_token_loss}
    else:
        config["score_func"] = lambda m: -next_token_loss(m, batches[0]).item()
    space, result = nasframe.search(model, "params=70%", algorithm=algorithm, config=config)
    exported = nasframe.export(space)
    assert n_params(exported) <= 0.7 * before
    save_pretrained_pruned(exported, tmp_path / "plain")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "plain").eval()
    expected = logits(exported)
    torch.testing.assert_close(logits(loaded), expected, atol=1e-5, rtol=0)
    error = (logits(loaded) - expected).norm() / expected.norm()
    assert error <= 1e-4, float(error)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_per_layer_result_is_restored_exactly_by_nasframe_load(tmp_path, family):
    model = _model(family)
    architecture = {"name": "transformers", "kwargs": {"config": clean_config_dict(model.config)}}
    space = nasframe.convert(model)
    names = list(space.hparams)
    config = {name: space.hparams[name].choices[0] for name in names[::3]}
    space.select(config)
    exported = nasframe.export(space)
    nasframe.save(
        exported, tmp_path / "nf", space.config(), architecture, kept_units=space.kept_units()
    )
    restored = nasframe.load(tmp_path / "nf")
    assert n_params(restored) == n_params(exported)
    torch.testing.assert_close(logits(restored), logits(exported), atol=1e-6, rtol=0)
