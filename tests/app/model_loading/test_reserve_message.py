"""An infeasible parameter budget is reported in the user's terms: the constraint they wrote,
not the lower limit the search aimed at after holding back the bias reserve that
reconstruction may add, with how much was reserved and why."""

from __future__ import annotations

import re
from pathlib import Path

from cli_runner import run_main
from loading_support import search_argv

RESERVED = re.compile(
    r"constraint params=(?P<asked>[\d.]+)% asks for (?P<limit>[\d,]+) params, but --reconstruct "
    r"lsq may give the maps it repairs up to (?P<reserve>[\d,]+) bias parameters, so the "
    r"search keeps (?P=reserve) params in reserve and the smallest reachable sub-network "
    r"\((?P<smallest>[\d,]+)\) plus that reserve is (?P<least>[\d,]+) \([\d.]+% of "
    r"(?P<before>[\d,]+)\); relax the constraint to at least that"
)


def number(text: str) -> int:
    return int(text.replace(",", ""))


def error_of(model_dir: Path, corpus: Path, out: Path, constraint: str, *extra: str) -> str:
    argv = search_argv(model_dir, corpus, out, "--constraint", constraint, "--no-checkpoint")
    code, _, stderr = run_main([*argv, *extra])
    assert code == 2, stderr
    (line,) = stderr.strip().splitlines()
    return line


def test_the_message_names_the_users_constraint_and_the_reserve(
    model_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    message = error_of(model_dir, corpus, tmp_path / "a", "params=0.001%")
    match = RESERVED.search(message)
    assert match, message
    assert "params=-" not in message and "asks for -" not in message
    reserve, smallest = number(match["reserve"]), number(match["smallest"])
    assert reserve > 0 and number(match["least"]) == smallest + reserve
    # Even without the reserve this budget is out of reach: dropping reconstruction is no fix.
    assert "--reconstruct none" not in message

    # Without reconstruction nothing is reserved: the plain message, the same smallest size.
    plain = error_of(model_dir, corpus, tmp_path / "b", "params=0.001%", "--reconstruct", "none")
    assert "reserve" not in plain and f"has {match['smallest']}" in plain

    # A budget only the reserve makes infeasible: dropping reconstruction is offered too.
    before = number(match["before"])
    between = 100 * (smallest + reserve / 2) / before
    message = error_of(model_dir, corpus, tmp_path / "c", f"params={between:.4f}%")
    assert RESERVED.search(message), message
    assert message.endswith("relax the constraint to at least that, or pass --reconstruct none.")
