"""Fuzzing convert, search and export (issue 8).

hypothesis drives random small models (``nn.Sequential`` stacks and small custom networks of
Linear, activations, LayerNorm, residual and gated blocks, Embedding front ends with or
without a tied head, ``nn.MultiheadAttention`` blocks, and a few modules nasframe has no
dynamic version of), random rules, random constraint strings (valid and invalid) and a random
algorithm through ``nasframe.search`` and ``nasframe.space.export``. Every outcome must be one of:

- a :class:`~nasframe.errors.UserInputError` (an :class:`InfeasibleConstraintError` is one)
  whose message is one line ending with a period, *and* whose cause the test can confirm on
  its own (the constraint or the rule really is malformed, the budget really is below the
  smallest sub-network, the model really has nothing searchable, ...);
- a searched space whose export contains no dynamic module, computes what the searched model
  computes, has exactly ``result.cost_after`` parameters (or FLOPs) and meets the limit.

Anything else (another exception type, a wrong count, a NaN output, an error the inputs do not
explain) is a failure.
"""

from __future__ import annotations

import copy
import re

import pytest
import torch
from fuzz_inputs import (
    FUZZ,
    PROPERTY,
    VALID_CONSTRAINTS,
    VALID_RULES,
    constraint_strategy,
    loss_faults,
    make_batches,
    rules_strategy,
    search_config,
)
from fuzz_models import bad_input, build, make_input, model_specs
from fuzz_oracles import (
    check_error,
    check_success,
    real_params,
)
from hypothesis import event, given
from hypothesis import strategies as st

import nasframe
from nasframe import (
    Constraint,
    UserInputError,
    convert,
    export,
)

# The fuzzed models are built of modules nasframe warns about on purpose (unsupported ones);
# the warnings are not what these tests check.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@FUZZ
@given(
    spec=model_specs(),
    rules=rules_strategy,
    constraint=constraint_strategy,
    algorithm=st.sampled_from(["gradnas", "fastnas"]),
    loss_kind=st.sampled_from(["mse", "ce"]),
    num_batches=st.integers(1, 3),
    dummy=st.sampled_from(["good", "good", "good", "none", "bad"]),
    fault=loss_faults,
    convert_first=st.booleans(),
    uniform=st.sampled_from([False, False, True]),
    second_constraint=st.one_of(st.none(), VALID_CONSTRAINTS),
)
def test_fuzz_search_gives_a_valid_model_or_a_clear_error(
    spec,
    rules,
    constraint,
    algorithm,
    loss_kind,
    num_batches,
    dummy,
    fault,
    convert_first,
    uniform,
    second_constraint,
) -> None:
    model = build(spec)
    twin = copy.deepcopy(model)
    batches = make_batches(spec, loss_kind, num_batches, spec["seed"])
    x = make_input(spec, seed=7)
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()
    dummy_input = {"good": x, "none": None, "bad": bad_input(spec)}[dummy]
    case = {
        "rules": rules,
        "constraint": constraint,
        "twin": twin,
        "x": x,
        "dummy": dummy,
        "fault": fault,
        "algorithm": algorithm,
        "uniform": uniform,
    }
    try:
        # Converting first and searching the space takes the other path through search.
        target = convert(model, rules) if convert_first else model
        space, result = nasframe.search(
            target,
            constraint,
            dummy_input=dummy_input,
            algorithm=algorithm,
            config=search_config(algorithm, batches, loss_kind, uniform, fault),
            rules=None if convert_first else rules,
        )
    except UserInputError as error:
        event(f"{type(error).__name__}: {re.sub(r'[0-9.,%]+', 'N', str(error))[:50]}")
        check_error(error, case)
        return
    event(f"success: {Constraint.from_mapping(constraint).kind}, {algorithm}")
    check_success(space, result, case)
    if second_constraint is None:
        return
    # Search the searched (sorted, pruned) space again: the same outcomes are allowed.
    case["constraint"] = second_constraint
    try:
        space, result = nasframe.search(
            space,
            second_constraint,
            dummy_input=dummy_input,
            algorithm=algorithm,
            config=search_config(algorithm, batches, loss_kind, uniform, fault),
        )
    except UserInputError as error:
        check_error(error, case)
        return
    event("success: searched twice")
    check_success(space, result, case)


@PROPERTY
@given(
    spec=model_specs(),
    rules=VALID_RULES,
    fractions=st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)),
    loss_kind=st.sampled_from(["mse", "ce"]),
    algorithm=st.sampled_from(["gradnas", "gradnas", "fastnas"]),
)
def test_a_stricter_params_budget_never_keeps_more(
    spec, rules, fractions, loss_kind, algorithm
) -> None:
    model = build(spec)
    space = convert(copy.deepcopy(model), rules)
    if not space.hparams:
        return
    total = real_params(model)
    space.select(space.min_config())
    lowest = min(100.0, 100 * real_params(export(space)) / total + 1e-6)
    strict, loose = sorted(lowest + f * (100 - lowest) for f in fractions)
    batches = make_batches(spec, loss_kind, 2, spec["seed"])

    kept, configs = {}, {}
    for percent in (strict, loose):
        space, result = nasframe.search(
            copy.deepcopy(model),  # a fresh copy per search: same weights, same scores
            f"params={percent!r}%",
            algorithm=algorithm,
            config=search_config(algorithm, batches, loss_kind),
            rules=rules,
        )
        exported = export(space)
        kept[percent], configs[percent] = real_params(exported), result.config
        assert kept[percent] == result.cost_after <= result.limit
    assert kept[strict] <= kept[loose], (strict, loose, kept)
    for name in configs[strict]:  # one threshold for all: no hparam grows when it tightens
        assert configs[strict][name] <= configs[loose][name], name
