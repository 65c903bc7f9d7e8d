"""BERT (``BertForMaskedLM``, ``BertModel``): hidden size, heads, FFN width, depth; export,
plain save, and which models are described.

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

from hf_models.bert import (  # noqa: E402
    HP,
    LAYERS,
    VOCAB,
    exported_params,
    ids,
    logits,
    tiny_model,
)
from nasframe_transformers import clean_config_dict, save_pretrained_pruned  # noqa: E402
from nasframe_transformers.families.bert import describe_ties  # noqa: E402

import nasframe  # noqa: E402
from nasframe.cost.cost_model import CostModel  # noqa: E402
from nasframe.errors import UserInputError  # noqa: E402


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_full_size_is_unchanged_and_sorting_keeps_the_function(attention):
    model = tiny_model(attention)
    reference = copy.deepcopy(model)
    space = nasframe.convert(model)
    per_layer = ["attention.num_attention_heads", "intermediate_size"]
    assert list(space.hparams) == [
        "bert.hidden_size",
        f"{HP}.depth",
        *(f"{HP}.{i}.{name}" for i in range(LAYERS) for name in per_layer),
    ]
    layer = model.bert.encoder.layer[1]
    heads = space.hparams[f"{HP}.1.attention.num_attention_heads"]
    assert layer.attention.self.get_hparam("num_attention_heads") is heads
    assert layer.attention.output.dense.get_hparam("in_features") is heads
    assert heads.max == 4
    assert torch.equal(logits(model, ids()), logits(reference, ids()))
    generator = torch.Generator().manual_seed(2)
    for hparam in space.hparams.values():
        hparam.importance = torch.rand(hparam.max, generator=generator)
    space.sort_parameters()
    assert not torch.equal(
        layer.attention.self.query.weight,
        reference.bert.encoder.layer[1].attention.self.query.weight,
    )
    torch.testing.assert_close(logits(model, ids()), logits(reference, ids()), atol=1e-5, rtol=0)


@functools.cache
def sorted_space(tied: bool) -> nasframe.SearchSpace:
    """One converted, importance-sorted model per tying (hypothesis reuses it per example)."""
    space = nasframe.convert(tiny_model(tied=tied))
    generator = torch.Generator().manual_seed(3)
    for hparam in space.hparams.values():
        hparam.importance = torch.rand(hparam.max, generator=generator)
    space.sort_parameters()
    return space


@pytest.mark.parametrize("tied", [True, False])
@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_export_equals_the_dynamic_model_and_the_cost_model(tied, data):
    space = sorted_space(tied)
    config = {
        name: data.draw(st.sampled_from(hp.choices), name) for name, hp in space.hparams.items()
    }
    space.select(config)
    exported = nasframe.export(space)
    torch.testing.assert_close(
        logits(exported, ids()), logits(space.model, ids()), atol=1e-5, rtol=0
    )
    assert CostModel(space).params() == exported_params(exported)
    hidden = config["bert.hidden_size"]
    assert exported.bert.embeddings.word_embeddings.embedding_dim == hidden
    assert len(exported.bert.encoder.layer) == config[f"{HP}.depth"]
    head = exported.cls.predictions
    assert (head.decoder.weight is exported.bert.embeddings.word_embeddings.weight) == tied
    assert (head.decoder.bias is head.bias) == tied
    assert head.decoder.in_features == head.transform.dense.out_features == hidden


def test_the_bare_model_and_its_pooler_follow_the_hidden_size():
    model = tiny_model(model_class="BertModel")
    reference = copy.deepcopy(model)
    space = nasframe.convert(model)
    hidden = space.hparams["hidden_size"]
    assert model.pooler.dense.get_hparam("in_features") is hidden
    assert model.pooler.dense.get_hparam("out_features") is hidden
    generator = torch.Generator().manual_seed(4)
    for hparam in space.hparams.values():
        hparam.importance = torch.rand(hparam.max, generator=generator)
    space.sort_parameters()

    def outputs(m: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            out = m(ids())
        return torch.cat([out.last_hidden_state, out.pooler_output[:, None]], dim=1)

    # Sorting permutes the hidden channels, which are this model's output.
    permuted = outputs(reference)[..., hidden.unit_ids]
    torch.testing.assert_close(outputs(model), permuted, atol=1e-5, rtol=0)
    space.select({"hidden_size": 16, "encoder.layer.1.attention.num_attention_heads": 2})
    exported = nasframe.export(space)
    assert exported.pooler.dense.weight.shape == (16, 16)
    torch.testing.assert_close(outputs(exported), outputs(model), atol=1e-5, rtol=0)
    assert CostModel(space).params() == exported_params(exported)


def test_hidden_pruning_keeps_the_decoder_tied_to_the_word_embeddings():
    model = tiny_model()
    space = nasframe.convert(model)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    decoder = model.cls.predictions.decoder
    assert decoder.get_hparam("in_features") is space.hparams["bert.hidden_size"]
    assert decoder.get_hparam("out_features") is None  # the vocabulary
    space.select({"bert.hidden_size": 20})
    exported = nasframe.export(space)
    words = exported.bert.embeddings.word_embeddings.weight
    assert exported.cls.predictions.decoder.weight is words and words.shape == (VOCAB, 20)
    assert exported.cls.predictions.bias.shape == (VOCAB,)


def test_depth_pruning_removes_whole_layers():
    model = tiny_model()
    reference = copy.deepcopy(model)
    space = nasframe.convert(model)
    depth = space.hparams[f"{HP}.depth"]
    depth.importance = torch.tensor([3.0, 1.0, 2.0])  # the middle layer matters least
    space.select({f"{HP}.depth": 2})
    exported = nasframe.export(space)
    kept = exported.bert.encoder.layer
    assert len(kept) == 2 and exported.config.num_hidden_layers == 2
    assert [layer.attention.self.layer_idx for layer in kept] == [0, 1]
    originals = reference.bert.encoder.layer
    assert torch.equal(kept[1].output.dense.weight, originals[2].output.dense.weight)
    reference.bert.encoder.layer = torch.nn.ModuleList([originals[0], originals[2]])
    torch.testing.assert_close(logits(exported, ids()), logits(reference, ids()), atol=1e-6, rtol=0)


def test_a_uniform_config_loads_back_with_plain_from_pretrained(tmp_path):
    space = nasframe.convert(tiny_model())
    config = {"bert.hidden_size": 24, f"{HP}.depth": 2}
    for i in range(LAYERS):
        config |= {f"{HP}.{i}.attention.num_attention_heads": 3, f"{HP}.{i}.intermediate_size": 24}
    space.select(config)
    exported = nasframe.export(space)
    save_pretrained_pruned(exported, tmp_path / "pruned")
    loaded = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "pruned").eval()
    sizes = ("hidden_size", "num_attention_heads", "intermediate_size", "num_hidden_layers")
    assert [getattr(loaded.config, key) for key in sizes] == [24, 3, 24, 2]
    assert loaded.cls.predictions.decoder.weight is loaded.bert.embeddings.word_embeddings.weight
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging dir left
    torch.testing.assert_close(logits(loaded, ids()), logits(exported, ids()), atol=1e-5, rtol=0)


def test_a_head_size_the_config_cannot_derive_is_refused_and_restored_by_nasframe(tmp_path):
    original = clean_config_dict(tiny_model().config)
    space = nasframe.convert(tiny_model())
    space.select({"bert.hidden_size": 24})  # 4 heads of 8 would need 32
    exported = nasframe.export(space)
    with pytest.raises(UserInputError, match="derives the head size"):
        save_pretrained_pruned(exported, tmp_path / "plain")
    space.select({f"{HP}.0.attention.num_attention_heads": 2, f"{HP}.2.intermediate_size": 16})
    exported = nasframe.export(space)
    with pytest.raises(UserInputError, match="num_attention_heads differs between layers"):
        save_pretrained_pruned(exported, tmp_path / "plain")
    # The config keeps the sizes nasframe.load rebuilds and selects down from.
    saved = clean_config_dict(exported.config)
    assert saved == original
    kwargs = {"config": saved, "auto_class": "AutoModelForMaskedLM"}
    nasframe.save(
        exported, tmp_path / "nf", space.config(), {"name": "transformers", "kwargs": kwargs}
    )
    restored = nasframe.load(tmp_path / "nf").eval()  # built by from_config: in train mode
    assert restored.bert.encoder.layer[0].attention.self.query.out_features == 16
    torch.testing.assert_close(logits(restored, ids()), logits(exported, ids()), atol=1e-6, rtol=0)


def test_describe_ties_claims_only_the_supported_bert_models():
    config = tiny_model().config
    assert describe_ties(transformers.BertForSequenceClassification(config)) is None
    llama = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    assert describe_ties(transformers.LlamaForCausalLM(llama)) is None
    assert describe_ties(tiny_model(model_class="BertModel")) is not None
