"""BERT searches (params, uniform) and gradnas mask semantics: a zero head, FFN or hidden
mask is exactly removing that unit.

Tiny randomly initialised configs; no download. The whole file is skipped where transformers
is not installed (it is part of the dev extra).
"""

from __future__ import annotations

import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_models.bert import (  # noqa: E402
    HP,
    exported_params,
    ids,
    logits,
    masked_lm_loss,
    tiny_model,
)
from nasframe_transformers import save_pretrained_pruned  # noqa: E402
from nasframe_transformers.modules.bert_heads import setup_bert_heads  # noqa: E402

import nasframe  # noqa: E402
from nasframe.plugins import get_algorithm  # noqa: E402


@pytest.mark.parametrize("algorithm", ["gradnas", "fastnas"])
def test_a_search_meets_its_params_constraint(algorithm):
    model = tiny_model()
    before = exported_params(model)
    batches = [ids(seed) for seed in range(4)]
    if algorithm == "gradnas":
        config = {"data_loader": batches, "loss_func": masked_lm_loss, "verbose": False}
    else:

        def score(m: torch.nn.Module) -> float:
            return -masked_lm_loss(m, batches[0]).item()

        config = {"score_func": score, "verbose": False}
    rules = {"*hidden_size": {"divisor": 8}, "*intermediate_size": {"divisor": 8}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        space, result = nasframe.search(
            model, "params=80%", algorithm=algorithm, config=config, rules=rules
        )
    assert not [w for w in caught if "no gradient setup" in str(w.message)]
    exported = nasframe.export(space)
    kept = exported_params(exported)
    assert kept <= 0.8 * before and kept == result.cost_after
    assert result.config["bert.hidden_size"] % 8 == 0
    torch.testing.assert_close(
        logits(exported, ids()), logits(space.model, ids()), atol=1e-5, rtol=0
    )


def test_a_zero_head_mask_is_exactly_removing_that_head():
    model = tiny_model(attention="eager").double()
    space = nasframe.convert(model)
    dense = model.bert.encoder.layer[1].attention.output.dense
    searcher = get_algorithm("gradnas")
    assert searcher.SETUP_GRADIENT_FUNC.for_module(dense) is setup_bert_heads
    manager, handle = setup_bert_heads(dense)
    with torch.no_grad():
        full = masked_lm_loss(model, ids())
        manager.mask[2] = 0.0
        masked = masked_lm_loss(model, ids())
    handle.remove()
    heads = space.hparams[f"{HP}.1.attention.num_attention_heads"]
    heads.importance = torch.tensor([1.0, 1.0, 0.0, 1.0])
    space.select({heads.name: 3})
    with torch.no_grad():
        removed = masked_lm_loss(model, ids())
    assert model.bert.encoder.layer[1].attention.self.all_head_size == 24
    assert abs(masked.item() - full.item()) > 1e-6  # the head did matter
    assert removed.item() == pytest.approx(masked.item(), abs=1e-12)


def test_a_zero_ffn_mask_is_exactly_removing_that_unit():
    """gradnas masks the FFN on output.dense's input, after the GELU: exact removal."""
    from gradnas.setups import setup_linear_input

    model = tiny_model().double()
    space = nasframe.convert(model)
    down = model.bert.encoder.layer[0].output.dense
    assert get_algorithm("gradnas").SETUP_GRADIENT_FUNC.for_module(down) is setup_linear_input
    manager, handle = setup_linear_input(down)
    with torch.no_grad():
        manager.mask[7] = 0.0
        masked = masked_lm_loss(model, ids())
    handle.remove()
    width = space.hparams[f"{HP}.0.intermediate_size"]
    width.importance = torch.ones(48).index_fill(0, torch.tensor([7]), 0.0)
    space.select({width.name: 47})
    with torch.no_grad():
        removed = masked_lm_loss(model, ids())
    assert removed.item() == pytest.approx(masked.item(), abs=1e-12)


def test_a_zero_hidden_mask_removes_the_channel_from_every_reader():
    """Post-LN: a LayerNorm turns a zeroed input channel into ``bias - mean * weight / std``,
    so the stream's mask must also sit on the LayerNorms' outputs to reach every reader."""
    from gradnas.setups import setup_residual_stream

    model = tiny_model()
    space = nasframe.convert(model)
    name = "bert.hidden_size"
    manager, handles = setup_residual_stream(
        model, space.hparams[name], space.residual_streams[name]
    )
    readers = [
        m for n, m in model.named_modules() if n.endswith(("attention.self", "intermediate.dense"))
    ]
    readers += [model.cls.predictions.transform.dense, model.cls.predictions.decoder]
    seen: list[torch.Tensor] = []
    hooks = [r.register_forward_pre_hook(lambda _, args: seen.append(args[0])) for r in readers]
    with torch.no_grad():
        manager.mask[5] = 0.0
        masked_lm_loss(model, ids())
    for hook in hooks:
        hook.remove()
    handles.remove()
    assert len(seen) == len(readers)
    assert all(torch.equal(x[..., 5], torch.zeros_like(x[..., 5])) for x in seen)
    assert all(x[..., 4].abs().sum() > 0 for x in seen)


def test_a_uniform_search_result_always_has_a_plain_config(tmp_path):
    """The head size is hidden_size / num_attention_heads in a BertConfig, so a uniform
    search keeps both whole; the result then saves for plain transformers."""
    model = tiny_model()
    batches = [ids(seed) for seed in range(3)]
    config = {
        "data_loader": batches,
        "loss_func": masked_lm_loss,
        "verbose": False,
        "uniform": True,
    }
    space, result = nasframe.search(model, "params=80%", algorithm="gradnas", config=config)
    assert "bert.hidden_size" not in result.config  # no longer searchable
    assert space.all_hparams["bert.hidden_size"].active == 32
    widths = {v for k, v in result.config.items() if k.endswith("intermediate_size")}
    assert len(widths) == 1
    exported = nasframe.export(space)
    save_pretrained_pruned(exported, tmp_path / "plain")
    loaded = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "plain").eval()
    torch.testing.assert_close(logits(loaded, ids()), logits(exported, ids()), atol=1e-5, rtol=0)
