"""Bad input to ``nasframe search``: one ``nasframe: error:`` line, exit code 2, and nothing
written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cli_runner import run_main
from cli_support import (
    files_under,
    search_argv,
)

from nasframe.app.cli import EXIT_USAGE, main


def make_inputs(directory: Path) -> dict[str, Path]:
    directory.mkdir()
    inputs = {
        "empty": directory / "empty.txt",
        "bad_json": directory / "bad.jsonl",
        "short": directory / "short.txt",
        "latin1": directory / "latin1.txt",
        "a_file": directory / "a_file",
    }
    inputs["empty"].write_text("  \n\n", encoding="utf-8")
    inputs["bad_json"].write_text('{"text": "fine"}\n{"text": oops}\n', encoding="utf-8")
    inputs["short"].write_text("far too short\n\nto fill a batch\n", encoding="utf-8")
    inputs["latin1"].write_bytes("caf\xe9 au lait\n\nencore\n".encode("latin-1"))
    inputs["a_file"].write_text("not a directory\n", encoding="utf-8")
    return inputs


# (id, arguments replacing or extending the good command, regexes the one stderr line matches)
BAD_INPUTS = [
    ("unknown-algo", ["--algo", "nope"], [r"unknown algorithm 'nope'", r"fastnas", r"gradnas"]),
    ("constraint-abc", ["--constraint", "params=abc"], [r"'abc' is not a number", r"params=75%"]),
    ("constraint-zero", ["--constraint", "params=0%"], [r"params=0%", r"positive"]),
    ("constraint-negative", ["--constraint", "params=-5%"], [r"-5%", r"positive"]),
    ("constraint-over-100", ["--constraint", "params=150%"], [r"params=150%", r"100%"]),
    ("constraint-kind", ["--constraint", "bogus=50%"], [r"unknown constraint 'bogus'", "params"]),
    ("constraint-no-amount", ["--constraint", "params"], [r"'params' is not KIND=AMOUNT"]),
    (
        "constraint-infeasible",
        ["--constraint", "params=0.01%"],
        [r"smallest reachable sub-network has [0-9,]+ ", r"relax the constraint"],
    ),
    ("missing-data", ["--data", "{dir}/nowhere.txt"], [r"nowhere\.txt does not exist"]),
    ("empty-data", ["--data", "{empty}"], [r"empty\.txt is empty"]),
    ("invalid-jsonl", ["--data", "{bad_json}"], [r"Line 2 of corpus file .*not valid JSON"]),
    ("not-utf8", ["--data", "{latin1}"], [r"latin1\.txt is not UTF-8", r"re-encode"]),
    ("text-too-short", ["--data", "{short}"], [r"tokens but one batch", r"longer text"]),
    ("out-is-a-file", ["--out", "{a_file}"], [r"--out .*a_file is a file", r"directory"]),
    ("out-inside-a-file", ["--out", "{a_file}/out"], [r"--out .*a_file.* is a file"]),
    (
        "checkpoint-inside-a-file",
        ["--checkpoint", "{a_file}/state.json"],
        [r"--checkpoint .*a_file.* is a file"],
    ),
    ("unknown-model", ["--model", "nope"], [r"unknown model 'nope'", r"byte-mlp-tiny"]),
    ("batch-size-text", ["--batch-size", "x"], [r"--batch-size", r"'x' is not a whole number"]),
    ("batch-size-zero", ["--batch-size", "0"], [r"--batch-size", r"'0' must be at least 1"]),
    ("divisor-too-large", ["--divisor", "1000"], [r"--divisor 1000", r"lower --divisor"]),
]


@pytest.mark.parametrize(
    ("replace", "patterns"),
    [pytest.param(args, patterns, id=case) for case, args, patterns in BAD_INPUTS],
)
def test_bad_input_is_one_line_and_exit_code_2(
    replace: list[str], patterns: list[str], corpus: Path, tmp_path: Path
) -> None:
    inputs = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    values = {name: str(path) for name, path in inputs.items()} | {"dir": str(tmp_path / "in")}
    replace = [arg.format(**values) for arg in replace]
    argv = search_argv(corpus, out, "--algo", "gradnas", "--constraint", "params=70%", "--quiet")
    for flag, value in zip(replace[::2], replace[1::2], strict=True):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    before = {p: p.read_bytes() for p in inputs.values() if p.is_file()}

    code, stdout, stderr = run_main(argv)

    assert code == EXIT_USAGE, stderr
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nasframe: error: "), stderr
    for pattern in patterns:
        assert re.search(pattern, lines[0]), (pattern, lines[0])
    # Nothing was written: no output folder content, no temporary file, inputs untouched.
    assert files_under(out) == []
    assert not list(tmp_path.rglob("*.tmp"))
    assert {p: p.read_bytes() for p in inputs.values() if p.is_file()} == before


@pytest.mark.parametrize(
    ("argv", "patterns"),
    [
        pytest.param(["bogus"], [r"invalid choice: 'bogus'", r"\(see nasframe --help\)"], id="cmd"),
        pytest.param([], [r"required: command", r"\(see nasframe --help\)"], id="no-command"),
        pytest.param(
            ["search", "--seq-len", "1.5"],
            [r"--seq-len", r"\(see nasframe search --help\)"],
            id="sub",
        ),
        pytest.param(
            ["search", "--allocation", "greedy"],
            [r"--allocation: invalid choice: 'greedy'", r"'threshold', 'global'"],
            id="allocation",
        ),
        pytest.param(
            ["search", "--normalize", "mean"], [r"--normalize: invalid choice"], id="normalize"
        ),
        pytest.param(
            ["search", "--min-keep", "1.5"],
            [r"--min-keep: expected a fraction between 0 and 1, got '1.5'"],
            id="min-keep",
        ),
        pytest.param(
            ["search", "--reconstruct", "retrain"],
            [r"--reconstruct: invalid choice: 'retrain'", r"'none', 'bias', 'lsq'"],
            id="reconstruct",
        ),
    ],
)
def test_bad_command_line_is_one_line_and_exit_code_2(argv: list[str], patterns: list[str]) -> None:
    code, stdout, stderr = run_main(argv)
    assert code == EXIT_USAGE
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nasframe: error: "), stderr
    for pattern in patterns:
        assert re.search(pattern, lines[0]), (pattern, lines[0])
    assert stdout == ""


def test_an_error_after_progress_output_still_ends_in_one_error_line(
    corpus: Path, tmp_path: Path
) -> None:
    """Without --quiet the log precedes the error, which stays a single last line."""
    argv = search_argv(corpus, tmp_path / "out", "--constraint", "params=0.01%")
    code, _, stderr = run_main(argv)
    assert code == EXIT_USAGE
    assert "Traceback" not in stderr
    assert stderr.startswith("loading model byte-mlp-tiny")
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("nasframe: error: constraint params=0.01%"), last
    assert stderr.count("nasframe: error:") == 1
    assert files_under(tmp_path / "out") == []


def test_checkpoint_and_no_checkpoint_together_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "--checkpoint", "x.json", "--no-checkpoint"])
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "not allowed with argument" in lines[0]
