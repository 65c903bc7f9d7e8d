"""Reconstruction modes (``none``, ``bias``, ``lsq``): bad arguments, exactness, and the
never-worse properties. Tiny float64 models, so equalities hold to float64 precision."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reconstruction_support import batches_for, mlp_space, outputs, per_target_mse, run
from torch import nn

import nasframe
from nasframe.errors import UserInputError


def test_an_unknown_mode_is_one_user_error_naming_the_valid_modes():
    space = mlp_space()
    with pytest.raises(UserInputError, match="unknown reconstruction mode 'ols'.*none, bias, lsq"):
        nasframe.reconstruct(space, [], run, "ols")
    assert nasframe.RECONSTRUCT_MODES == ("none", "bias", "lsq", "sequential")


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
