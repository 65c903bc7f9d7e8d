"""``nasframe algos`` and ``nasframe models`` list what is registered, with descriptions."""

from __future__ import annotations

from cli_runner import run_main


def first_column(stdout: str) -> dict[str, str]:
    rows = [line.split("\t", 1) for line in stdout.splitlines() if line.strip()]
    return {name: description for name, description in rows}


def test_algos_lists_the_registered_algorithms() -> None:
    code, stdout, stderr = run_main(["algos"])
    assert code == 0, stderr
    listed = first_column(stdout)
    assert {"gradnas", "fastnas"} <= set(listed)
    assert all(description.strip() for description in listed.values())


def test_models_lists_the_registered_models() -> None:
    code, stdout, stderr = run_main(["models"])
    assert code == 0, stderr
    listed = first_column(stdout)
    assert {"byte-mlp", "byte-mlp-tiny"} <= set(listed)
    assert all(description.strip() for description in listed.values())
