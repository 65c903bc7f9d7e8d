"""Reconstruction after pruning (``bias`` and ``lsq``): exactness, never-worse properties,
skipped maps, restoration, chunking, data parallelism, and added biases through every export.

Tiny float64 models, so equalities hold to float64 precision.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from hypothesis import given, settings
from hypothesis import strategies as st
from models import MLP, ResidualMLP, seeded
from test_distributed import run_script_ranks
from torch import nn

import nasframe
from nasframe.app.lm import next_token_loss
from nasframe.errors import UserInputError
from nasframe.reconstruction.targets import find_targets


def run(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    return model(batch)


def batches_for(features: int, count: int = 6, rows: int = 24, seed: int = 3) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(rows, features, generator=generator, dtype=torch.float64) for _ in range(count)
    ]


def outputs(model: nn.Module, batches: list) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(batch) for batch in batches])


def mlp_space(widths=(16,), seed: int = 0, importance_seed: int | None = None):
    space = nasframe.convert(seeded(MLP, 6, list(widths), 3, seed=seed).double())
    if importance_seed is not None:  # kept units that are not a prefix
        generator = torch.Generator().manual_seed(importance_seed)
        for hparam in space.all_hparams.values():
            hparam.importance = torch.rand(hparam.max, generator=generator)
    return space


def per_target_mse(space, batches, forward, mode: str, ridge: float = 1e-2) -> dict[str, float]:
    """Each target's mean squared output error on the dense calibration inputs after
    reconstructing a copy of ``space`` with ``mode``: ``W'_K x_K + b'`` against ``W x + b``."""
    space = copy.deepcopy(space)
    targets, _ = find_targets(space)
    captured: dict[str, list[torch.Tensor]] = {t.name: [] for t in targets}
    handles = [
        t.input_module.register_forward_pre_hook(
            lambda _, args, name=t.name: captured[name].append(args[0].detach())
        )
        for t in targets
    ]
    selected = {name: hp.active for name, hp in space.all_hparams.items()}
    for hparam in space.all_hparams.values():
        hparam.active = hparam.max
    with torch.no_grad():
        for batch in batches:
            forward(space.model, batch)
    space.select(selected)
    for handle in handles:
        handle.remove()

    def weights(target):
        bias = target.bias
        bias = torch.zeros(target.out_features) if bias is None else bias.detach()
        return target.matrix().detach().double().clone(), bias.double().clone()

    before = {t.name: weights(t) for t in targets}
    nasframe.reconstruct(space, batches, forward, mode, ridge=ridge)
    errors = {}
    for target in targets:
        x = torch.cat(captured[target.name]).reshape(-1, target.in_features).double()
        (w, b), (w2, b2) = before[target.name], weights(target)
        dense = x @ w.T + b
        pruned = x[:, target.kept] @ w2[:, target.kept].T + b2
        errors[target.name] = float(((dense - pruned) ** 2).mean())
    return errors


# --- the modes ---------------------------------------------------------------------------


def test_an_unknown_mode_is_one_user_error_naming_the_valid_modes():
    space = mlp_space()
    with pytest.raises(UserInputError, match="unknown reconstruction mode 'ols'.*none, bias, lsq"):
        nasframe.reconstruct(space, [], run, "ols")
    assert nasframe.RECONSTRUCT_MODES == ("none", "bias", "lsq")


@pytest.mark.parametrize(
    ("kwargs", "batches", "message"),
    [
        ({"ridge": -1.0}, 2, r"ridge must be a finite number >= 0, got -1.0; e.g. 0.01."),
        ({"ridge": float("nan")}, 2, r"ridge must be a finite number >= 0, got nan"),
        ({"max_stats_bytes": 0}, 2, r"max_stats_bytes must be positive, got 0."),
        ({}, 0, r"reconstruction needs calibration batches; none were given."),
    ],
)
def test_bad_reconstruction_arguments_are_one_user_error_and_change_nothing(
    kwargs, batches, message
):
    space = mlp_space()
    space.select({"layers.0.out_features": 5})
    state = copy.deepcopy(space.model.state_dict())
    with pytest.raises(UserInputError, match=message):
        nasframe.reconstruct(space, batches_for(6, count=batches), run, "lsq", **kwargs)
    for name, value in space.model.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_mode_none_runs_nothing_and_changes_nothing():
    space = mlp_space()
    space.select({"layers.0.out_features": 5})
    state = copy.deepcopy(space.model.state_dict())

    def forbidden(model, batch):
        raise AssertionError("mode none must not run the model")

    report = nasframe.reconstruct(space, batches_for(6), forbidden, "none")
    assert report.mode == "none" and report.reconstructed == [] and report.batches == 0
    for name, value in space.model.state_dict().items():
        assert torch.equal(value, state[name])


@settings(max_examples=15, deadline=None)
@given(
    width=st.integers(1, 15),
    seed=st.integers(0, 5),
    importance_seed=st.one_of(st.none(), st.integers(0, 5)),
)
def test_bias_mode_keeps_the_dense_mean_output_exactly(width, seed, importance_seed):
    """One cut, nothing nonlinear after it: folding the removed inputs' mean into the bias
    makes the pruned model's mean output over the calibration data the dense one."""
    space = mlp_space(seed=seed, importance_seed=importance_seed)
    batches = batches_for(6, seed=seed)
    dense = outputs(space.model, batches).mean(dim=0)
    space.select({"layers.0.out_features": width})
    report = nasframe.reconstruct(space, batches, run, "bias")
    assert report.reconstructed == ["layers.1"] and report.batches == len(batches)
    torch.testing.assert_close(outputs(space.model, batches).mean(dim=0), dense, rtol=0, atol=1e-12)


def test_lsq_reproduces_the_dense_model_when_removed_inputs_are_combinations_of_kept_ones():
    """Linear -> Linear from 8 features through 12: any 8 hidden units determine the other 4
    (affinely), so least squares refits the kept columns to the exact dense map."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 12), nn.Linear(12, 3)).double()
    dense = copy.deepcopy(model)
    space = nasframe.convert(model)
    space.select({"0.out_features": 8})
    nasframe.reconstruct(space, batches_for(8), run, "lsq", ridge=0.0)
    fresh = batches_for(8, seed=11)  # not the calibration data: the map itself is recovered
    torch.testing.assert_close(outputs(model, fresh), outputs(dense, fresh), rtol=0, atol=1e-9)


def test_lsq_with_vanishing_ridge_beats_bias_which_beats_nothing():
    space = mlp_space(widths=(16, 12), importance_seed=1)
    space.select({"layers.0.out_features": 9, "layers.1.out_features": 5})
    batches = batches_for(6)
    errors = {
        mode: per_target_mse(space, batches, run, mode, ridge=1e-9)
        for mode in ("none", "bias", "lsq")
    }
    for name in errors["none"]:
        assert errors["lsq"][name] < errors["bias"][name] < errors["none"][name]
    damped = per_target_mse(space, batches, run, "lsq", ridge=1e-2)
    assert all(errors["lsq"][name] <= damped[name] * (1 + 1e-9) for name in damped)


@settings(max_examples=20, deadline=None)
@given(
    widths=st.lists(st.integers(1, 12), min_size=1, max_size=3),
    data=st.data(),
    ridge=st.sampled_from([0.0, 1e-6, 1e-2, 1.0]),
)
def test_bias_and_lsq_never_increase_any_targets_calibration_error(widths, data, ridge):
    space = mlp_space(widths=[w + 1 for w in widths], importance_seed=len(widths))
    config = {
        name: data.draw(st.sampled_from(hparam.choices), label=name)
        for name, hparam in space.hparams.items()
    }
    space.select(config)
    batches = batches_for(6, count=3)
    none, bias, lsq = (
        per_target_mse(space, batches, run, m, ridge) for m in ("none", "bias", "lsq")
    )
    for name in none:
        assert bias[name] <= none[name] * (1 + 1e-9) + 1e-15
        assert lsq[name] <= bias[name] * (1 + 1e-9) + 1e-15


# --- what is skipped -----------------------------------------------------------------------


class SharedReadout(nn.Module):
    """Two readouts of one hidden layer that share their weight (each with its own bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 10)
        self.act = nn.GELU()
        self.left = nn.Linear(10, 3)
        self.right = nn.Linear(10, 3)
        self.right.weight = self.left.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.act(self.fc1(x))
        return self.left(hidden) + self.right(hidden)


def test_maps_with_a_shared_weight_are_skipped_and_left_unchanged():
    model = seeded(SharedReadout).double()
    space = nasframe.convert(model)
    space.select({"fc1.out_features": 6})
    state = copy.deepcopy(model.state_dict())
    report = nasframe.reconstruct(space, batches_for(4), run, "lsq")
    assert report.reconstructed == []
    assert "shared with right" in report.skipped["left"]
    assert "shared with left" in report.skipped["right"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name])


def test_readers_of_a_normalised_stream_are_skipped_and_the_ffn_outputs_repaired():
    space = nasframe.convert(seeded(ResidualMLP, 4, 8, [10, 6], 3).double())
    stream = next(name for name in space.hparams if name.startswith("inp"))
    space.select({stream: 5, "blocks.0.fc1.out_features": 4})
    report = nasframe.reconstruct(space, batches_for(4), run, "bias")
    assert report.reconstructed == ["blocks.0.fc2"]
    for reader in ("blocks.0.fc1", "blocks.1.fc1", "head"):
        assert "normalises its input dimension" in report.skipped[reader]
    assert report.skipped["blocks.1.fc2"] == "nothing of its input is pruned"


def test_the_selected_config_and_training_flags_are_restored():
    space = mlp_space(widths=(16, 12))
    space.model.train()
    space.model.layers[1].eval()  # mixed flags come back as they were
    config = {"layers.0.out_features": 5, "layers.1.out_features": 7}
    space.select(config)
    seen = []

    def forward(model, batch):
        seen.append((space.config(), model.training, model.layers[1].training))
        return model(batch)

    nasframe.reconstruct(space, batches_for(6, count=2), forward, "lsq")
    assert seen == [(space.max_config(), False, False)] * 2
    assert space.config() == config
    assert space.model.training and not space.model.layers[1].training
    assert space.model.layers[0].training


def test_a_failing_forward_restores_everything_and_changes_no_weight():
    space = mlp_space(widths=(16, 12))
    space.model.train()
    config = {"layers.0.out_features": 5, "layers.1.out_features": 7}
    space.select(config)
    state = copy.deepcopy(space.model.state_dict())

    def forward(model, batch):
        raise RuntimeError("the batch is broken")

    with pytest.raises(RuntimeError, match="the batch is broken"):
        nasframe.reconstruct(space, batches_for(6), forward, "lsq")
    assert space.config() == config and space.model.training
    assert all(not module._forward_pre_hooks for module in space.model.modules())
    for name, value in space.model.state_dict().items():
        assert torch.equal(value, state[name])


# --- memory and data parallelism --------------------------------------------------------------


@pytest.mark.parametrize("mode", ["bias", "lsq"])
def test_a_tiny_statistics_budget_measures_in_chunks_with_the_same_result(mode):
    spaces = [mlp_space(widths=(16, 12, 10), importance_seed=2) for _ in range(2)]
    config = {"layers.0.out_features": 9, "layers.1.out_features": 5, "layers.2.out_features": 3}
    calls = []

    def forward(model, batch):
        calls.append(1)
        return model(batch)

    batches = batches_for(6, count=4)
    for space in spaces:
        space.select(config)
    nasframe.reconstruct(spaces[0], batches, forward, mode)
    assert len(calls) == 4  # one pass for every target
    calls.clear()
    one_shot = iter(batches)  # an iterator is read once and kept for every pass
    report = nasframe.reconstruct(spaces[1], one_shot, forward, mode, max_stats_bytes=1)
    assert len(calls) == 3 * 4 and report.batches == 4  # a pass per target
    first, second = (space.model.state_dict() for space in spaces)
    for name, value in first.items():
        assert torch.equal(value, second[name]), name


def test_kept_statistics_serve_other_budgets_and_modes_without_running_the_model_again():
    config = {"layers.0.out_features": 9, "layers.1.out_features": 5, "layers.2.out_features": 3}
    smaller = {"layers.0.out_features": 4, "layers.1.out_features": 5, "layers.2.out_features": 6}
    calls = []

    def forward(model, batch):
        calls.append(1)
        return model(batch)

    batches = batches_for(6, count=4)
    kept: dict = {}
    for mode, selected in (("lsq", config), ("lsq", smaller), ("bias", config)):
        fresh, cached = (mlp_space(widths=(16, 12, 10), importance_seed=2) for _ in range(2))
        for space in (fresh, cached):
            space.select(selected)
        calls.clear()
        nasframe.reconstruct(fresh, batches, forward, mode)
        measured = len(calls)
        calls.clear()
        nasframe.reconstruct(cached, batches, forward, mode, statistics=kept)
        # the first call measures (and keeps), later calls on the same model measure nothing
        assert len(calls) == (measured if mode == "lsq" and selected is config else 0)
        for name, value in fresh.model.state_dict().items():
            assert torch.equal(value, cached.model.state_dict()[name]), (mode, name)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")
def test_two_ranks_reconstruct_like_one_process(tmp_path):
    worker = Path(__file__).parent / "reconstruct_worker.py"

    def start(out: Path, world: int) -> list[tuple[int, str]]:
        return run_script_ranks([str(worker), str(out)], world)

    assert all(code == 0 for code, _ in start(tmp_path / "one", 1))
    pair = start(tmp_path / "two", 2)
    assert all(code == 0 for code, _ in pair), [err for _, err in pair]
    alone, *ranks = (
        json.loads(Path(f"{tmp_path / name}.{rank}").read_text(encoding="utf-8"))
        for name, rank in (("one", 0), ("two", 0), ("two", 1))
    )
    assert [r["world_size"] for r in ranks] == [2, 2] and alone["reconstructed"]
    for record in ranks:
        assert record["reconstructed"] == alone["reconstructed"]
        for name, values in alone["weights"].items():
            assert record["weights"][name] == pytest.approx(values, rel=1e-9, abs=1e-12)


# --- added biases through every export --------------------------------------------------------


def biasless() -> nn.Module:
    def build() -> nn.Module:
        return nn.Sequential(nn.Linear(6, 16, bias=False), nn.GELU(), nn.Linear(16, 3, bias=False))

    return seeded(build).double()


def test_an_added_bias_survives_export_and_nasframe_save_and_load(tmp_path):
    model = biasless()
    space = nasframe.convert(model)
    space.select({"0.out_features": 7})
    batches = batches_for(6)
    report = nasframe.reconstruct(space, batches, run, "lsq")
    assert report.added_biases == {"2.bias": 3} == space.added_biases
    assert model[2].bias is not None and model[2].bias.dtype == torch.float64
    exported = nasframe.export(space)
    assert exported[2].bias is not None and exported[2].in_features == 7
    torch.testing.assert_close(outputs(exported, batches), outputs(model, batches), rtol=0, atol=0)
    nasframe.save(exported, tmp_path / "nf", space.config(), added_biases=space.added_biases)
    metadata = json.loads((tmp_path / "nf" / "nasframe.json").read_text(encoding="utf-8"))
    assert metadata["added_biases"] == {"2.bias": 3}
    loaded = nasframe.load(tmp_path / "nf", model=biasless())
    torch.testing.assert_close(outputs(loaded, batches), outputs(exported, batches), rtol=0, atol=0)


def test_a_file_without_added_biases_still_loads_and_a_bad_entry_is_refused(tmp_path):
    model = biasless()
    space = nasframe.convert(model)
    space.select({"0.out_features": 7})
    nasframe.save(nasframe.export(space), tmp_path / "nf", space.config())
    metadata_path = tmp_path / "nf" / "nasframe.json"
    metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
    del metadata["added_biases"]  # as written before reconstruction existed
    metadata_path.write_text(json.dumps(metadata), encoding="utf-8")
    nasframe.load(tmp_path / "nf", model=biasless())
    metadata["added_biases"] = {"9.bias": 3}
    metadata_path.write_text(json.dumps(metadata), encoding="utf-8")
    with pytest.raises(UserInputError, match="adds a bias '9.bias'"):
        nasframe.load(tmp_path / "nf", model=biasless())


# --- transformers families ---------------------------------------------------------------------


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
    import test_transformers_bert as bert
    import test_transformers_gpt2 as gpt2
    import test_transformers_llama as llama

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


def test_maps_of_removed_layers_and_residual_stream_readers_are_skipped():
    space, batches = family_space("llama")
    space.all_hparams["model.layers.depth"].importance = torch.tensor([0.0, 1.0])  # keep 1
    space.select({"model.layers.depth": 1, "model.hidden_size": 16})
    report = nasframe.reconstruct(space, batches, forward_ids, "bias")
    assert report.reconstructed == [
        "model.layers.1.self_attn.o_proj",
        "model.layers.1.mlp.down_proj",
    ]
    assert "removed by model.layers.depth" in report.skipped["model.layers.0.mlp.down_proj"]
    for reader in ("model.layers.1.mlp.gate_proj", "lm_head"):
        assert "residual stream model.hidden_size" in report.skipped[reader]


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
    import test_transformers_llama_dims as llama

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
