"""Fuzzing constraint strings: each parses to a sane budget or is one clear error, and the
reference parsers the fuzz oracles use agree with nasframe on fixed examples (issue 8)."""

from __future__ import annotations

import math

import pytest
from fuzz_inputs import (
    PROPERTY,
)
from fuzz_oracles import (
    assert_clear,
    independent_constraint_error,
    independent_rules_error,
)
from hypothesis import given
from hypothesis import strategies as st

from nasframe import (
    ChoiceRule,
    Constraint,
    UserInputError,
)

# The fuzzed models are built of modules nasframe warns about on purpose (unsupported ones);
# the warnings are not what these tests check.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


constraint_texts = st.one_of(
    st.text(alphabet="paramsflo =0123456789.eE+-%kKmMgGbBtTnix_,", max_size=16),
    st.builds(
        lambda kind, number, unit: f"{kind}={number}{unit}",
        st.sampled_from(["params", "flops", "PARAMS", " flops ", "foo", ""]),
        st.one_of(st.integers(-10, 10**12), st.floats(allow_nan=True, allow_infinity=True)),
        st.sampled_from(["", "%", "k", "M", "g", "B", "T", " %", "%%", "x"]),
    ),
    st.text(max_size=12),
)


@PROPERTY
@given(text=constraint_texts)
def test_a_constraint_string_parses_to_a_sane_budget_or_a_clear_error(text) -> None:
    try:
        constraint = Constraint.parse(text)
    except UserInputError as error:
        assert_clear(error)
        return
    assert constraint.kind in ("params", "flops")
    assert constraint.amount > 0  # (an overflowing amount such as 1e400 is read as inf)
    if constraint.relative:
        assert constraint.amount <= 100
    assert not independent_constraint_error(text), text


def test_the_reference_parsers_agree_with_nasframe_on_fixed_examples() -> None:
    """The oracles above are only as good as their own parsers."""
    for text in ("params=50%", "flops=1e3", "PARAMS = 5k", "params=0.5K", "params=100%"):
        assert not independent_constraint_error(text)
        Constraint.parse(text)
    for text in ("params=0%", "params=150%", "foo=1%", "params=abc", "", "params=nan%"):
        assert independent_constraint_error(text)
        with pytest.raises(UserInputError):
            Constraint.parse(text)
    assert not independent_rules_error({"*": {"divisor": 3, "min_size": 0}})
    ChoiceRule(divisor=3, min_size=0)
    assert independent_rules_error({"*": {"divisor": 0}})
    with pytest.raises(UserInputError):
        ChoiceRule(divisor=0)
    assert math.isinf(float("1e400"))
