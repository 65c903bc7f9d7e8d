"""GPT-2 searches (params, FLOPs, uniform) and gradnas mask semantics: a mask of zero is
exactly removing the unit, and the residual stream mask zeroes a channel everywhere.

Tiny randomly initialised configs; no download. The whole file is skipped where transformers
is not installed (it is part of the dev extra).
"""

from __future__ import annotations

import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")

from gradnas.searcher import GradientBinarySearcher  # noqa: E402
from gradnas.setups import setup_residual_stream  # noqa: E402
from hf_models.gpt2 import (  # noqa: E402
    DEPTH,
    HIDDEN,
    heads,
    ids,
    inner,
    logits,
    param_count,
    rank,
    tiny_model,
)
from nasframe_transformers import save_pretrained_pruned  # noqa: E402

import nasframe  # noqa: E402
from nasframe.app.lm import next_token_loss  # noqa: E402
from nasframe.cost.cost_model import CostModel  # noqa: E402


def search_config(algorithm: str) -> dict:
    batches = [ids(seed) for seed in range(4)]
    if algorithm == "gradnas":
        return {"data_loader": batches, "loss_func": next_token_loss, "verbose": False}

    def score(model):
        return -next_token_loss(model, batches[0]).item()

    return {"score_func": score, "verbose": False}


# Every head and layer, the widths in steps of 8 (fastnas evaluates every allowed size).
RULES = {"*.num_heads": {}, "*.depth": {}, "*": {"divisor": 8}}


@pytest.mark.parametrize("algorithm", ["gradnas", "fastnas"])
def test_a_search_meets_its_params_constraint(algorithm):
    model = tiny_model()
    before = param_count(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        space, result = nasframe.search(
            model, "params=80%", algorithm=algorithm, config=search_config(algorithm), rules=RULES
        )
    assert not [w for w in caught if "no gradient setup" in str(w.message)]
    assert all(hparam.importance is not None for hparam in space.hparams.values())
    assert set(result.config) == set(space.hparams) and len(result.config) == 8
    exported = nasframe.export(space)
    kept = param_count(exported)
    assert kept <= 0.8 * before and kept == result.cost_after
    assert result.config != space.max_config()
    assert all(result.config[inner(i)] % 8 == 0 for i in range(3))
    torch.testing.assert_close(logits(exported), logits(space.model), atol=1e-5, rtol=0)


def test_a_gradnas_search_meets_a_flops_constraint():
    """The attention's FLOPs (projections and scores) are exact in its two slots, so the
    fitted FLOP model predicts what a measurement counts."""
    model = tiny_model()
    dummy = ids()[:1]
    space, result = nasframe.search(
        model, "flops=70%", dummy, algorithm="gradnas", config=search_config("gradnas")
    )
    measured = CostModel(space, dummy).measure_flops()
    assert measured == result.cost_after <= 0.7 * result.cost_before
    assert result.config[HIDDEN] < 32 or any(result.config[heads(i)] < 4 for i in range(3))


def test_a_uniform_search_has_a_plain_config(tmp_path):
    model = tiny_model()
    config = search_config("fastnas") | {"uniform": True}
    space, result = nasframe.search(
        model, "params=80%", algorithm="fastnas", config=config, rules=RULES
    )
    assert set(result.config) == {DEPTH, *(inner(i) for i in range(3))}  # n_embd, n_head whole
    assert len({result.config[inner(i)] for i in range(3)}) == 1
    exported = nasframe.export(space)
    save_pretrained_pruned(exported, tmp_path / "plain")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "plain").eval()
    assert param_count(loaded) <= 0.8 * param_count(model)
    torch.testing.assert_close(logits(loaded), logits(exported), atol=1e-5, rtol=0)


def masked_and_removed_losses(kind: str) -> tuple[float, float]:
    """The loss with one unit's gradnas mask at 0, and with that unit pruned instead."""
    model = tiny_model("eager").double()
    space = nasframe.convert(model)
    block = model.transformer.h[1]
    module, name, unit = {
        "head": (block.attn, heads(1), 2),
        "ffn": (block.mlp.c_proj, inner(1), 7),
        "depth": (model.transformer.h, DEPTH, 1),
    }[kind]
    setup = GradientBinarySearcher.SETUP_GRADIENT_FUNC.for_module(module)
    pairs = setup(module)
    manager, handle = pairs[0] if isinstance(pairs, list) else pairs
    assert manager.hparam is space.hparams[name]
    with torch.no_grad():
        manager.mask[unit] = 0
        masked = next_token_loss(model, ids()).item()
    handle.remove()
    hparam = space.hparams[name]
    rank(space, name, [u for u in range(hparam.max) if u != unit] + [unit])
    space.select({name: hparam.max - 1})
    with torch.no_grad():
        removed = next_token_loss(model, ids()).item()
    space.select({name: hparam.max})
    with torch.no_grad():
        full = next_token_loss(model, ids()).item()
    assert abs(full - masked) > 1e-6  # the unit matters, so the comparison means something
    return masked, removed


@pytest.mark.parametrize("kind", ["head", "ffn", "depth"])
def test_a_gradnas_mask_of_zero_is_exactly_removing_the_unit(kind):
    masked, removed = masked_and_removed_losses(kind)
    assert masked == pytest.approx(removed, abs=1e-12)


def test_the_residual_stream_mask_zeroes_a_channel_everywhere():
    """gradnas masks the hidden size on every write into the stream (wte, wpe, attention,
    FFN): a channel masked to 0 is 0 in every block's input and output."""
    model = tiny_model("eager")
    space = nasframe.convert(model)
    manager, handles = setup_residual_stream(
        model, space.hparams[HIDDEN], space.residual_streams[HIDDEN]
    )
    streams = []
    for block in model.transformer.h:
        block.register_forward_hook(lambda _, args, out: streams.extend([args[0], out]))
    with torch.no_grad():
        manager.mask[5] = 0
        model(ids())
    handles.remove()
    assert len(streams) == 6
    assert all(not stream[..., 5].any() and stream[..., 4].all() for stream in streams)
