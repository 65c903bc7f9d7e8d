"""What the fuzz tests feed ``nasframe.search`` besides a model: random rules and constraint
strings (valid and malformed), calibration batches, and search configs with an optionally
misbehaving loss; and how long hypothesis fuzzes."""

from __future__ import annotations

import os

import torch
from fuzz_models import DTYPES, make_input
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

# NASFRAME_FUZZ_EXAMPLES=2000 fuzzes longer (the defaults keep the file at about 20 s).
EXAMPLES = int(os.environ.get("NASFRAME_FUZZ_EXAMPLES", "0")) or None
FUZZ = settings(
    max_examples=EXAMPLES or 150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROPERTY = settings(
    max_examples=EXAMPLES or 50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


VALID_RULES = st.one_of(
    st.none(),
    st.none(),
    st.builds(
        lambda d, m: {"*": {"divisor": d, "min_size": m}},
        st.integers(1, 8),
        st.one_of(st.integers(0, 4), st.integers(0, 16)),
    ),
    st.builds(lambda d: {"*": {"divisor": d}}, st.integers(1, 8)),
    st.builds(lambda m: {"*": {"min_size": m}}, st.one_of(st.integers(0, 4), st.integers(0, 16))),
    st.builds(
        lambda d: {"*num_heads": {}, "*": {"divisor": d}},  # heads one by one, widths by d
        st.integers(1, 8),
    ),
    st.builds(
        lambda r: {"*": {"ratios": r}},
        st.lists(st.sampled_from([0.25, 0.5, 0.75, 1.0]), min_size=1, max_size=4),
    ),
)
INVALID_RULES = st.sampled_from(
    [
        {"*": {"divisor": 0}},
        {"*": {"divisor": -2}},
        {"*": {"min_size": -1}},
        {"*": {"divisor": 2.5}},
        {"*": {"divisor": True}},
        {"*": {"divisr": 4}},
        {"*": {"ratios": [0.0, 1.0]}},
        {"*": {"ratios": [1.5]}},
        {"*": {"ratios": "half"}},
        {"*": {"ratios": 0.5}},
    ]
)
rules_strategy = st.one_of(VALID_RULES, VALID_RULES, VALID_RULES, VALID_RULES, INVALID_RULES)

kinds = st.sampled_from(["params", "params", "flops"])
VALID_CONSTRAINTS = st.one_of(
    st.builds(lambda k, n: f"{k}={n}%", kinds, st.integers(1, 100)),
    st.builds(lambda k, v: f"{k}={v:.4g}%", kinds, st.floats(0.01, 100)),
    st.builds(lambda n: f"params={n}", st.integers(1, 4000)),
    st.builds(lambda n: f"params={n / 1000:g}k", st.integers(1, 4000)),
    st.builds(lambda n: f"PARAMS = {n:.1e}", st.integers(1, 4000)),
    st.builds(lambda n: f"flops={n}", st.integers(1, 200_000)),
    st.builds(lambda n: f"flops={n / 1000:g}K", st.integers(1, 200_000)),
    st.builds(lambda k, n: {k: f"{n}%"}, kinds, st.integers(1, 100)),
    st.builds(lambda n: {"params": n}, st.integers(1, 4000)),
)
# Malformed constraints, each of which must be refused (one exception noted below).
INVALID_CONSTRAINTS = st.sampled_from(
    [
        "params=0%",
        "params=-5%",
        "params=150%",
        "params=100.5%",
        "foo=50%",
        "params=abc",
        "params",
        "=50%",
        "",
        "params=1e400",  # overflows to inf: nasframe reads it as an unlimited budget (accepted)
        "params=1e400%",
        "params=nan%",
        "params=inf",
        "params=1e-400",
        "params=0",
        "flops=",
        "params=50%%",
        "params=5x",
        "params==50%",
        "params=50%,flops=60%",
        " = ",
        {"params": "50%", "flops": "50%"},
        {},
        {"params": None},
        {"flops": -1},
    ]
)
constraint_strategy = st.one_of(
    VALID_CONSTRAINTS, VALID_CONSTRAINTS, VALID_CONSTRAINTS, INVALID_CONSTRAINTS
)


def loss_fn(kind: str):
    if kind == "mse":
        return lambda output, target: F.mse_loss(output, target)
    return lambda output, target: F.cross_entropy(
        output.reshape(-1, output.shape[-1]), target.reshape(-1)
    )


def make_batches(spec: dict, loss_kind: str, count: int, seed: int) -> list[tuple]:
    """``count`` random (input, target) batches for the model of ``spec``."""
    batches = []
    out = spec["out"]
    for index in range(count):
        x = make_input(spec, seed + index)
        generator = torch.Generator().manual_seed(seed + 1000 + index)
        shape = (*x.shape[:-1], out) if spec.get("front") != "embedding" else (*x.shape, out)
        if loss_kind == "mse":
            target = torch.randn(shape, generator=generator).to(DTYPES[spec["dtype"]])
        else:
            target = torch.randint(0, out, shape[:-1], generator=generator)
        batches.append((x, target))
    return batches


# A misbehaving loss or data loader, and the one-line error each must give. fastnas only
# sees "nan" (its score_func returns NaN); the others are gradnas's.
LOSS_FAULTS = {
    "unreduced": "loss_func must return a scalar tensor",
    "detached": "does not require grad",
    "nan": "nan",
    "empty": "the data loader yielded no batches",
}
loss_faults = st.sampled_from([None] * 8 + sorted(LOSS_FAULTS))


def search_config(
    algorithm: str,
    batches: list[tuple],
    loss_kind: str,
    uniform: bool = False,
    fault: str | None = None,
) -> dict:
    loss = loss_fn(loss_kind)

    def faulty(value: torch.Tensor) -> torch.Tensor:
        if fault == "unreduced":
            return torch.stack([value, value])
        if fault == "detached":
            return value.detach()
        if fault == "nan":
            return value * float("nan")
        return value

    if algorithm == "gradnas":
        return {
            "data_loader": [] if fault == "empty" else batches,
            "loss_func": lambda model, batch: faulty(loss(model(batch[0]), batch[1])),
            "verbose": False,
            "uniform": uniform,
        }
    x, y = batches[0]

    def score_func(model: nn.Module) -> float:
        return float("nan") if fault == "nan" else -float(loss(model(x), y))

    return {"score_func": score_func, "verbose": False, "uniform": uniform}
