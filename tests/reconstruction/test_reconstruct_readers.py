"""Least squares repairs the readers of a pruned hidden size (query/key/value and FFN input
projections, an untied head), from paired dense and pruned inputs.

What a user relies on: where the hidden size is pruned, ``lsq`` and ``sequential`` refit
every map that reads a norm's output so that its pruned output matches the dense one (the
first layer's exactly the least-squares fit of the input the pruned model really gives it);
no bias is added to a reader; the result exports as it runs, whatever the family's layout
(separate, fused or per-head fused q/k/v); it does not depend on the statistics bound; and
a reader whose input is not a norm's output (OLMo 2's attention reads the raw residual) is
left alone with the reason.
"""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import nasframe

pytest.importorskip("transformers")
from hf_models import llama, structural  # noqa: E402

FAMILIES = ("llama", "qwen3", "gemma3", "opt", "gptj", "phi3", "gpt_neox", "olmo2")


def forward(model: nn.Module, ids: torch.Tensor):
    return model(ids)


def tiny(family: str, seed: int = 0) -> nn.Module:
    if family == "llama":
        return llama.tiny_model("llama").double()
    return structural.tiny_model(family, seed=seed).double()


def token_batches(vocab: int, count: int = 6, seed: int = 7) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (2, 12), generator=generator) for _ in range(count)]


def hidden_pruned(model: nn.Module, step: int = 1, importance_seed: int = 0):
    """``model`` converted, with the hidden size ``step`` choices below its full size and
    the kept channels not a prefix (random importance)."""
    space = nasframe.convert(model, {"*": {"divisor": 4}})
    (name,) = [n for n, h in space.hparams.items() if h.is_residual_stream]
    hidden = space.hparams[name]
    generator = torch.Generator().manual_seed(importance_seed)
    hidden.importance = torch.rand(hidden.max, generator=generator)
    choices = sorted(hidden.choices)
    space.select({name: choices[max(0, len(choices) - 1 - step)]})
    return space


def logits(model: nn.Module, batches) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(batch).logits for batch in batches])


def captured(model: nn.Module, names: list[str], batches, output: bool) -> dict[str, torch.Tensor]:
    """Each named module's input (or output) rows over ``batches``."""
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in names}

    def hook(name: str):
        def record(_, args, out=None):
            tensor = out if output else args[0]
            rows[name].append(tensor.detach().reshape(-1, tensor.shape[-1]))

        return record

    modules = dict(model.named_modules())
    handles = [
        modules[name].register_forward_hook(hook(name))
        if output
        else modules[name].register_forward_pre_hook(hook(name))
        for name in names
    ]
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(parts) for name, parts in rows.items()}


def test_a_first_layer_reader_gets_the_least_squares_fit_of_its_real_pruned_input() -> None:
    model = llama.tiny_model("llama").double()
    space = hidden_pruned(model, step=2)
    batches = token_batches(llama.VOCAB, count=8)
    names = [f"model.layers.0.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj")]
    selected = {n: h.active for n, h in space.all_hparams.items()}
    with space.selected(space.max_config()):  # W x, the dense outputs
        dense_out = captured(space.model, names, batches, output=True)
    pruned_in = captured(space.model, names, batches, output=False)  # z, before any repair
    report = nasframe.reconstruct(space, batches, forward, "lsq", ridge=0.0)
    assert set(names) <= set(report.readers)
    modules = dict(space.model.named_modules())
    for name in names:
        z, y = pruned_in[name], dense_out[name]
        expected = torch.linalg.lstsq(z, y).solution.T  # no bias: Llama's q/k/v have none
        with space.selected(selected):
            kept = modules[name].weight[:, space_kept_columns(space)]
        torch.testing.assert_close(kept, expected, rtol=1e-6, atol=1e-8, msg=name)


def space_kept_columns(space) -> torch.Tensor:
    """The kept hidden channels, ascending (the order the pruned model reads them in)."""
    module = space.model.get_submodule("model.layers.0.self_attn")
    return torch.as_tensor(module.kept_elements("q_proj.weight", 1)).sort().values


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    family=st.sampled_from(FAMILIES),
    step=st.integers(1, 3),
    importance_seed=st.integers(0, 100),
    mode=st.sampled_from(["lsq", "sequential"]),
)
def test_every_norm_reader_is_repaired_without_a_bias_and_exports_as_it_runs(
    family: str, step: int, importance_seed: int, mode: str
) -> None:
    model = tiny(family)
    space = hidden_pruned(model, step, importance_seed)
    batches = token_batches(model.config.vocab_size)
    biases_before = {n for n, _ in space.model.named_parameters() if n.endswith("bias")}
    report = nasframe.reconstruct(space, batches, forward, mode)
    residual = [n for n, reason in report.skipped.items() if "residual stream" in reason]
    if family == "olmo2":  # its attention reads the residual sum itself, not a norm's output
        assert residual and all(
            "does not read a module's output" in report.skipped[n] for n in residual
        )
        assert report.readers == ["lm_head"]  # the head reads the final norm's output
    else:
        assert not residual
        assert report.readers
    assert not set(report.readers) & set(report.skipped)
    added = set(report.added_biases)
    assert not any(bias.rpartition(".")[0] in report.readers for bias in added)
    assert biases_before | added == {
        n for n, _ in space.model.named_parameters() if n.endswith("bias")
    }
    exported = nasframe.export(space)
    torch.testing.assert_close(
        logits(exported, batches), logits(space.model, batches), rtol=0, atol=1e-6
    )


def test_readers_do_not_depend_on_the_statistics_bound() -> None:
    model = tiny("qwen3")
    space = hidden_pruned(model, step=2, importance_seed=4)
    batches = token_batches(model.config.vocab_size)
    one, many = copy.deepcopy(space), copy.deepcopy(space)
    first = nasframe.reconstruct(one, batches, forward, "lsq")
    second = nasframe.reconstruct(many, batches, forward, "lsq", max_stats_bytes=1)
    assert first.readers == second.readers and first.readers
    for (name, a), (_, b) in zip(
        one.model.named_parameters(), many.model.named_parameters(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_repaired_readers_bring_the_pruned_logits_closer_to_the_dense_ones() -> None:
    # On calibration text: the readers' fit is to the dense outputs on these batches.
    model = tiny("gemma3")
    batches = token_batches(model.config.vocab_size, count=8)
    dense = logits(model, batches)
    space = hidden_pruned(copy.deepcopy(model), step=2, importance_seed=1)
    unrepaired = ((logits(space.model, batches) - dense) ** 2).mean()
    report = nasframe.reconstruct(space, batches, forward, "lsq")
    repaired = ((logits(space.model, batches) - dense) ** 2).mean()
    assert report.readers
    assert repaired < 0.9 * unrepaired
