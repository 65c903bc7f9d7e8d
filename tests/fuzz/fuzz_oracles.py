"""The fuzz tests' oracles: real costs, what makes an error clear, reference parsers that
decide on their own whether rules or a constraint are malformed, and the checks of an error
(the inputs must explain it) and of a success (a valid model that meets the constraint)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from fuzz_inputs import LOSS_FAULTS
from torch import nn

from nasframe import (
    Constraint,
    DynamicModule,
    InfeasibleConstraintError,
    UserInputError,
    convert,
    export,
)
from nasframe.cost.flops import count_flops
from nasframe.searchers.allocation import uniform_groups


def real_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # shared parameters once


def real_cost(kind: str, model: nn.Module, x: torch.Tensor) -> int:
    return real_params(model) if kind == "params" else count_flops(model, x)[0]


def assert_clear(error: UserInputError) -> None:
    message = str(error)
    assert message and "\n" not in message, f"not one line: {message!r}"
    assert message.rstrip().endswith("."), f"does not end with a period: {message!r}"


def independent_rules_error(rules: Any) -> bool:
    """Whether ``rules`` is malformed, decided without nasframe.convert."""
    for rule in (rules or {}).values():
        if set(rule) - {"divisor", "ratios", "min_size"}:
            return True
        values = dict(rule)
        ratios = values.get("ratios")
        if ratios is not None:
            if not isinstance(ratios, list | tuple) or not all(0 < r <= 1 for r in ratios):
                return True
            values["ratios"] = tuple(ratios)
        for key in ("divisor", "min_size"):
            value = values.get(key, 1)
            if isinstance(value, bool) or not isinstance(value, int):
                return True
        if values.get("divisor", 1) < 1 or values.get("min_size", 1) < 0:
            return True
    return False


def independent_constraint_error(constraint: Any) -> bool:
    """Whether ``constraint`` is malformed (parsed by a small reference parser)."""
    if isinstance(constraint, dict):
        if len(constraint) != 1:
            return True
        ((key, value),) = constraint.items()
        constraint = f"{key}={value}"
    key, sep, value = constraint.partition("=")
    if not sep or key.strip().lower() not in ("params", "flops"):
        return True
    value = value.strip()
    percent = value.endswith("%")
    value = value.removesuffix("%").strip()
    multiplier = {"k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9, "t": 1e12}
    if not percent and value[-1:].lower() in multiplier:
        value = value[:-1].strip()
    try:
        number = float(value)
    except ValueError:
        return True
    if value.lower().lstrip("+-") in ("nan", "inf", "infinity"):
        return True
    return not number > 0 or (percent and number > 100)


def smallest_cost(model: nn.Module, rules: Any, kind: str, x: torch.Tensor) -> int:
    """The real cost of the smallest sub-network of a fresh conversion of ``model``."""
    space = convert(copy.deepcopy(model), rules)
    space.select(space.min_config())
    return real_cost(kind, export(space), x)


def check_error(error: UserInputError, case: dict) -> None:
    """``error`` must be one clear line, and the inputs must explain it."""
    assert_clear(error)
    message = str(error)
    if independent_rules_error(case["rules"]) or independent_constraint_error(case["constraint"]):
        return  # malformed input, reported before anything ran
    constraint = Constraint.from_mapping(case["constraint"])
    twin, x = case["twin"], case["x"]
    if "nothing searchable" in message:
        assert not convert(copy.deepcopy(twin), case["rules"]).hparams, message
        return
    if constraint.kind == "flops" and case["dummy"] == "none":
        assert "needs a dummy input" in message, message
        return
    if constraint.kind == "flops" and case["dummy"] == "bad":
        assert message.startswith("the dummy input does not fit the model"), message
        return
    fault = case["fault"] if case["algorithm"] == "gradnas" or case["fault"] == "nan" else None
    if isinstance(error, InfeasibleConstraintError):
        if case.get("uniform") and message.startswith("with the same sizes in every layer"):
            return  # the uniform floor is over the limit (test_uniform_infeasibility_...)
        original = real_cost(constraint.kind, twin, x)  # checked before any scoring
        limit = constraint.limit(original)
        smallest = smallest_cost(twin, case["rules"], constraint.kind, x)
        if message.startswith("constraint "):  # the space itself cannot reach the limit
            assert smallest > limit, f"{message} (smallest reachable: {smallest}, limit {limit})"
        else:  # the algorithm prunes only some hparams: it still cannot beat the whole space
            assert case["algorithm"] == "gradnas" and "can only prune" in message, message
        return
    if fault is not None:
        assert LOSS_FAULTS[fault] in message, (fault, message)
        return
    pytest.fail(f"UserInputError the inputs do not explain: {message}")


def check_success(space, result, case: dict) -> None:
    """The searched space exports to a valid model that meets the constraint."""
    constraint = Constraint.from_mapping(case["constraint"])
    twin, x = case["twin"], case["x"]
    assert not independent_rules_error(case["rules"]), "malformed rules were accepted"
    if case["algorithm"] == "gradnas" or case["fault"] == "nan":
        assert case["fault"] is None, f"the faulty loss ({case['fault']}) was not reported"
    if constraint.kind == "flops":
        assert case["dummy"] == "good", f"a flops search ran with dummy input {case['dummy']}"
    assert result.config == space.config()
    exported = export(space)
    assert not any(isinstance(m, DynamicModule) for m in exported.modules())
    with torch.no_grad():
        searched, plain = space.model(x), exported(x)
    assert torch.isfinite(plain).all(), "the exported model outputs NaN or Inf"
    torch.testing.assert_close(plain, searched, atol=1e-5, rtol=0)
    original = real_cost(constraint.kind, twin, x)
    assert result.cost_before == original
    assert result.limit == constraint.limit(original)
    assert result.cost_after <= result.limit
    assert real_cost(constraint.kind, exported, x) == result.cost_after
    if case.get("uniform"):  # one size per group of per-layer hparams
        full = {name: hp.max for name, hp in space.hparams.items()}
        for members in uniform_groups(list(space.hparams), full).values():
            assert len({result.config[name] for name in members}) == 1, members
    # Sorting the weights never changed the full-size model.
    space.select(space.max_config())
    with torch.no_grad():
        torch.testing.assert_close(space.model(x), twin(x), atol=1e-5, rtol=1e-5)
    space.select(result.config)
