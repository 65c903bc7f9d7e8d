"""Sequential reconstruction: each layer refitted on the pruned model's own inputs.

What a user relies on: with one layer it is the one-shot lsq refit (the first layer's inputs
are the same in both models); deeper, every refitted map is exactly the lsq refit on the
inputs the pruned (and repaired) model really computes for it, not on the dense ones; it
exports as it runs; a model it cannot walk is repaired one-shot and the report says so;
families of other layouts (GPT-2's tuple outputs and its cache argument) walk too.
"""

from __future__ import annotations

import copy

import pytest
import torch
from reconstruction_support import batches_for, mlp_space, run
from torch import nn

import nasframe
from nasframe.reconstruction.refit import refit_least_squares
from nasframe.reconstruction.targets import find_targets

pytest.importorskip("transformers")
from hf_models import gpt2, llama  # noqa: E402


def token_batches(vocab: int, count: int = 5) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return [torch.randint(0, vocab, (2, 10), generator=generator) for _ in range(count)]


def forward(model: nn.Module, ids: torch.Tensor):
    return model(ids)


HEADS_AND_FFN = ("intermediate_size", "query_heads_per_group", "n_inner", "num_heads")


def pruned_space(model: nn.Module, pruned: tuple[str, ...] = HEADS_AND_FFN) -> nasframe.SearchSpace:
    """``model`` (float64) with the hparams ending in ``pruned`` cut to about half."""
    space = nasframe.convert(model.double())
    config = {
        name: hparam.choices[(len(hparam.choices) - 1) // 2]
        for name, hparam in space.hparams.items()
        if name.endswith(pruned)
    }
    space.select(config)
    return space


def llama_with_layers(layers: int) -> nn.Module:
    model = llama.tiny_model("llama")
    if layers == 1:
        model.model.layers = model.model.layers[:1]
        model.config.num_hidden_layers = 1
    return model


def repaired(space: nasframe.SearchSpace, batches, mode: str):
    space = copy.deepcopy(space)
    report = nasframe.reconstruct(space, batches, forward, mode, ridge=1e-3)
    return space, report


def test_with_one_layer_and_its_ffn_pruned_it_is_the_one_shot_refit() -> None:
    # (with heads pruned too, the FFN's inputs already differ from the dense ones)
    space = pruned_space(llama_with_layers(1), ("intermediate_size",))
    batches = token_batches(llama.VOCAB)
    one_shot, _ = repaired(space, batches, "lsq")
    walked, report = repaired(space, batches, "sequential")
    assert report.note == "layer by layer over 1 layers"
    assert report.reconstructed == ["model.layers.0.mlp.down_proj"]
    for (name, a), (_, b) in zip(
        one_shot.model.named_parameters(), walked.model.named_parameters(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9, msg=name)


def refit_from_own_inputs(original, walked, batches, name: str) -> torch.Tensor:
    """The one-shot lsq refit of map ``name`` (weights of ``original``, the unrepaired
    space) on its full-width inputs as the *walked* model computes them: the walked model at
    its selected config with this map's input hparams at full size."""
    target = next(t for t in find_targets(walked)[0] if t.name == name)
    wide = {
        **walked.config(),
        **{n: s for n, s in target.input_sizes.items() if n in walked.hparams},
    }
    rows: list[torch.Tensor] = []
    handle = target.input_module.register_forward_pre_hook(
        lambda _, args: rows.append(args[0].detach().reshape(-1, args[0].shape[-1]))
    )
    try:
        with walked.selected(wide), torch.no_grad():
            for batch in batches:
                forward(walked.model, batch)
    finally:
        handle.remove()
    x = torch.cat(rows)
    mean = x.mean(0)
    covariance = (x - mean).T @ (x - mean) / len(x)
    source = next(t for t in find_targets(original)[0] if t.name == name)
    weight = source.matrix().detach()
    bias = torch.zeros(weight.shape[0], dtype=weight.dtype) if source.bias is None else source.bias
    columns, _ = refit_least_squares(weight, bias.detach(), mean, covariance, target.kept, 1e-3)
    return columns


def test_deeper_each_map_is_refitted_on_the_pruned_models_own_hidden_states() -> None:
    space = pruned_space(llama_with_layers(2))
    batches = token_batches(llama.VOCAB)
    walked, report = repaired(space, batches, "sequential")
    assert report.note == "layer by layer over 2 layers" and len(report.reconstructed) == 4
    one_shot, _ = repaired(space, batches, "lsq")
    for name in report.reconstructed:
        target = next(t for t in find_targets(walked)[0] if t.name == name)
        got = target.matrix()[:, target.kept]
        expected = refit_from_own_inputs(space, walked, batches, name)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9, msg=name)
    # the second layer's inputs changed with the first layer's pruning: not the one-shot fit
    last = "model.layers.1.mlp.down_proj"
    assert not torch.allclose(
        walked.model.get_submodule(last).weight, one_shot.model.get_submodule(last).weight
    )


def test_the_walked_model_exports_as_it_runs_and_keeps_the_bias_it_added(tmp_path) -> None:
    space = pruned_space(llama_with_layers(2))
    batches = token_batches(llama.VOCAB)
    walked, report = repaired(space, batches, "sequential")
    assert report.added_biases and set(walked.added_biases) == set(report.added_biases)
    with torch.no_grad():
        expected = torch.cat([walked.model(b).logits for b in batches])
        exported = nasframe.export(walked)
        got = torch.cat([exported(b).logits for b in batches])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_gpt2_blocks_return_tuples_and_take_layer_past_and_still_walk() -> None:
    space = pruned_space(gpt2.tiny_model())
    batches = token_batches(space.model.config.vocab_size)
    walked, report = repaired(space, batches, "sequential")
    assert report.note.startswith("layer by layer") and report.reconstructed
    for name in report.reconstructed:
        target = next(t for t in find_targets(walked)[0] if t.name == name)
        expected = refit_from_own_inputs(space, walked, batches, name)
        torch.testing.assert_close(
            target.matrix()[:, target.kept], expected, rtol=1e-6, atol=1e-9, msg=name
        )


def test_a_model_without_a_layer_stack_is_repaired_one_shot_and_says_so() -> None:
    space = mlp_space((16,), importance_seed=1)
    space.select({name: hp.choices[len(hp.choices) // 2] for name, hp in space.hparams.items()})
    batches = batches_for(6)
    one_shot = copy.deepcopy(space)
    nasframe.reconstruct(one_shot, batches, run, "lsq")
    report = nasframe.reconstruct(space, batches, run, "sequential")
    assert report.note == "one-shot lsq: the model has no layer stack to walk"
    for a, b in zip(one_shot.model.parameters(), space.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_a_layer_the_depth_drops_is_walked_past_and_the_kept_ones_refitted() -> None:
    model = llama.tiny_model("llama")
    model.model.layers.append(llama.tiny_model("llama", seed=1).model.layers[0])
    model.config.num_hidden_layers = 3
    space = pruned_space(model)
    space.select({**space.config(), "model.layers.depth": 2})
    batches = token_batches(llama.VOCAB)
    walked, report = repaired(space, batches, "sequential")
    assert report.note == "layer by layer over 3 layers"
    dropped = [r for r in report.skipped.values() if "removed by model.layers.depth" in r]
    assert report.reconstructed and dropped  # the dropped layer's maps are not refitted
    for name in report.reconstructed:
        target = next(t for t in find_targets(walked)[0] if t.name == name)
        expected = refit_from_own_inputs(space, walked, batches, name)
        torch.testing.assert_close(
            target.matrix()[:, target.kept], expected, rtol=1e-6, atol=1e-9, msg=name
        )
    with torch.no_grad():
        expected = torch.cat([walked.model(b).logits for b in batches])
        got = torch.cat([nasframe.export(walked)(b).logits for b in batches])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
