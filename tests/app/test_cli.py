"""The ``nasframe`` command line: listing, end-to-end searches, resuming, and bad input.

Searches run on ``byte-mlp-tiny`` with a small generated text file and tiny batches. The model
is trained once for all in-process searches (``train_tiny_model_once``), so each takes a fraction
of a second. One search runs as a real ``python -m nasframe`` subprocess, alongside the
in-process ones, to prove the entry point works.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import torch

import nasframe
import nasframe.app.job
from nasframe.app.cli import EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE, main
from nasframe.app.lm import ByteTokenizer, perplexity, token_batches
from nasframe.app.model_registry import ModelBundle, ModelEntry
from nasframe.app.text import load_corpus_file
from nasframe.io.serialization import read_metadata
from nasframe.space.hparam import ChoiceRule

SEQ_LEN, BATCH_SIZE, CALIBRATION, SCORE, EVAL = 16, 4, 4, 2, 2
SMALL = [
    "--model",
    "byte-mlp-tiny",
    "--seq-len",
    str(SEQ_LEN),
    "--batch-size",
    str(BATCH_SIZE),
    "--calibration-batches",
    str(CALIBRATION),
    "--score-batches",
    str(SCORE),
    "--eval-batches",
    str(EVAL),
]
WORDS_TEXT = (
    "the model prunes every layer to a budget while the search keeps units that matter most "
    "and a byte tokenizer reads plain text from documents split by blank lines"
)
OUTPUT_FILES = {"summary.json", "model.safetensors", "nasframe.json"}


def run_main(argv: Sequence[str]) -> tuple[int, str, str]:
    """``main(argv)`` in-process: (exit code, stdout, stderr); argparse's exits count too."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def search_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["search", *SMALL, "--data", str(data), "--out", str(out), *extra]


def write_corpus(path: Path, documents: int = 60, seed: int = 0) -> Path:
    """A few KB of blank-line separated documents (every 10th one is evaluation text)."""
    rng, words = random.Random(seed), WORDS_TEXT.split()
    docs = [
        " ".join(rng.choice(words) for _ in range(rng.randint(25, 55))) + "."
        for _ in range(documents)
    ]
    path.write_text("\n\n".join(docs), encoding="utf-8")
    return path


def read_summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def evaluation_batches(data: Path) -> list[torch.Tensor]:
    """The evaluation batches the job measures perplexity on, rebuilt as job.py builds them."""
    corpus = load_corpus_file(data)
    return token_batches(ByteTokenizer().encode(corpus.evaluation), SEQ_LEN, BATCH_SIZE, EVAL)


def files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


@pytest.fixture(scope="module", autouse=True)
def train_tiny_model_once() -> Iterator[None]:
    """Train byte-mlp-tiny once for all in-process searches (seconds each on a busy machine).

    Its training is deterministic, so a trained copy is what every job would get anyway; each
    job gets its own deep copy because jobs prune the model in place. The subprocess run and
    ``nasframe.load`` go through the real registry.
    """
    real_get = nasframe.app.job.get_model_entry
    trained: list[ModelBundle] = []

    def load_copy(progress: bool = True) -> ModelBundle:
        if not trained:
            trained.append(real_get("byte-mlp-tiny").load(progress=False))
        bundle = trained[0]
        return ModelBundle(
            copy.deepcopy(bundle.model), bundle.encode, bundle.name, bundle.architecture
        )

    def get_model_entry(name: str) -> ModelEntry:
        entry = real_get(name)
        return dataclasses.replace(entry, load=load_copy) if name == "byte-mlp-tiny" else entry

    # The tiny model gains nothing from intra-op threads, and on a shared 2-core machine
    # oversubscribed threads make training many times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(nasframe.app.job, "get_model_entry", get_model_entry)
            yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("data") / "corpus.txt")


@pytest.fixture(scope="module")
def fastnas_process(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The one real subprocess: ``python -m nasframe search`` with --quiet and --checkpoint.

    It starts before the in-process searches and runs alongside them. A divisor of 24 divides
    neither width of the tiny model (32 and 64), so the full size is the only kept size that
    is not a multiple of it.
    """
    root = tmp_path_factory.mktemp("fastnas")
    out, checkpoint = root / "out", root / "state" / "search.json"
    argv = search_argv(corpus, out, "--algo", "fastnas", "--constraint", "params=75%")
    argv += ["--divisor", "24", "--quiet", "--checkpoint", str(checkpoint)]
    with open(root / "stdout", "w") as stdout, open(root / "stderr", "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "nasframe", *argv],
            stdout=stdout,
            stderr=stderr,
            cwd=root,
            env={**os.environ, "OMP_NUM_THREADS": "1"},  # it runs alongside this process
        )
    run = {"out": out, "argv": argv, "limit": 0.75, "divisor": 24, "checkpoint": checkpoint}
    yield {**run, "process": process, "logs": root}
    if process.poll() is None:
        process.kill()
    process.wait()


@pytest.fixture(scope="module")
def fastnas_run(fastnas_process: dict) -> dict:
    code = fastnas_process["process"].wait(timeout=300)
    logs = fastnas_process["logs"]
    return {
        **fastnas_process,
        "code": code,
        "stdout": (logs / "stdout").read_text(encoding="utf-8"),
        "stderr": (logs / "stderr").read_text(encoding="utf-8"),
    }


@pytest.fixture(scope="module")
def gradnas_run(
    fastnas_process: dict, corpus: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    """One in-process gradnas search with progress output and the default checkpoint.

    Requests ``fastnas_process`` only so that the subprocess runs while this one does.
    """
    out = tmp_path_factory.mktemp("gradnas") / "out"
    argv = search_argv(corpus, out, "--algo", "gradnas", "--constraint", "params=70%")
    argv += ["--divisor", "8"]
    code, stdout, stderr = run_main(argv)
    return {
        "code": code,
        "stdout": stdout,
        "stderr": stderr,
        "out": out,
        "argv": argv,
        "limit": 0.70,
        "divisor": 8,
    }


@pytest.fixture(params=["gradnas", "fastnas"])
def finished_run(request: pytest.FixtureRequest) -> dict:
    run = request.getfixturevalue(f"{request.param}_run")
    assert run["code"] == 0, run["stderr"][-2000:]
    return run


# --- listing ----------------------------------------------------------------------------------


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


# --- end-to-end search ------------------------------------------------------------------------


def test_search_writes_a_summary_with_every_documented_figure(finished_run: dict) -> None:
    out = finished_run["out"]
    assert {p.name for p in out.iterdir()} >= OUTPUT_FILES
    summary = read_summary(out)
    algorithm = finished_run["argv"][finished_run["argv"].index("--algo") + 1]
    assert summary["algorithm"] == algorithm
    assert summary["model"] == "byte-mlp-tiny"
    assert summary["constraint"] == f"params={round(finished_run['limit'] * 100)}%"
    for kind in ("params", "flops"):
        before, after = summary[kind]["before"], summary[kind]["after"]
        assert 0 < after <= before
        assert summary[kind]["fraction"] == pytest.approx(after / before)
    for when in ("before", "after"):
        assert 1.0 < summary["perplexity"][when] < 1e6
    assert summary["hparams"], "the summary lists no hparam"
    assert summary["search"]["resumed_from_checkpoint"] is False
    assert summary["search"]["cost_after"] == summary["params"]["after"]
    phases = summary["timings_s"]
    assert {"load_model", "search", "evaluate_before", "evaluate_after", "save"} <= set(phases)
    assert all(seconds >= 0 for seconds in phases.values())
    assert "saved to" in finished_run["stdout"]


def test_search_meets_the_constraint(finished_run: dict) -> None:
    summary = read_summary(finished_run["out"])
    assert summary["params"]["fraction"] <= finished_run["limit"]
    assert summary["params"]["after"] <= summary["search"]["limit"]
    assert summary["search"]["limit"] == pytest.approx(
        finished_run["limit"] * summary["params"]["before"]
    )


def test_kept_sizes_respect_max_and_divisor(finished_run: dict) -> None:
    divisor = finished_run["divisor"]
    hparams = read_summary(finished_run["out"])["hparams"]
    for name, sizes in hparams.items():
        kept, full = sizes["kept"], sizes["max"]
        assert 1 <= kept <= full, name
        assert kept == full or kept % divisor == 0, (name, kept, full)
    assert any(sizes["kept"] < sizes["max"] for sizes in hparams.values()), "nothing was pruned"


def test_saved_model_loads_and_reproduces_the_reported_perplexity(
    finished_run: dict, corpus: Path
) -> None:
    out = finished_run["out"]
    summary = read_summary(out)
    model = nasframe.load(out)  # rebuilt from the registered name, no model passed
    assert sum(p.numel() for p in model.parameters()) == summary["params"]["after"]
    config = read_metadata(out)["config"]
    assert {name: config[name] for name in summary["hparams"]} == {
        name: sizes["kept"] for name, sizes in summary["hparams"].items()
    }
    measured = perplexity(model, evaluation_batches(corpus))
    assert measured == pytest.approx(summary["perplexity"]["after"], rel=1e-5)


def test_the_default_search_allocates_globally_and_reconstructs_by_least_squares(
    finished_run: dict,
) -> None:
    summary = read_summary(finished_run["out"])
    search = summary["search"]
    assert (search["allocation"], search["normalize"], search["min_keep"]) == ("global", "none", 0)
    assert summary["reconstruct"]["mode"] == "lsq"
    assert summary["reconstruct"]["reconstructed"], "no projection was repaired"
    assert summary["reconstruct"]["batches"] == CALIBRATION
    assert "reconstruct" in summary["timings_s"]


def test_allocation_and_reconstruction_flags_reach_the_search(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    flags = ["--allocation", "threshold", "--normalize", "sum", "--min-keep", "0.25"]
    argv = search_argv(corpus, out, "--constraint", "params=60%", "--reconstruct", "bias", *flags)
    code, _, stderr = run_main([*argv, "--no-checkpoint", "--quiet"])
    assert code == 0, stderr
    summary = read_summary(out)
    search = summary["search"]
    assert (search["allocation"], search["normalize"], search["min_keep"]) == (
        "threshold",
        "sum",
        0.25,
    )
    assert summary["reconstruct"]["mode"] == "bias"
    assert summary["params"]["fraction"] <= 0.6
    for name, sizes in summary["hparams"].items():
        assert sizes["kept"] >= 0.25 * sizes["max"], name
    model = nasframe.load(out)
    assert perplexity(model, evaluation_batches(corpus)) == pytest.approx(
        summary["perplexity"]["after"], rel=1e-5
    )


def test_search_uses_exactly_the_requested_calibration_batches(gradnas_run: dict) -> None:
    assert gradnas_run["code"] == 0, gradnas_run["stderr"][-2000:]
    assert read_summary(gradnas_run["out"])["search"]["calibration_batches"] == CALIBRATION


def test_progress_goes_to_stderr_unless_quiet(gradnas_run: dict) -> None:
    assert gradnas_run["code"] == 0
    assert "loading model byte-mlp-tiny" in gradnas_run["stderr"]
    assert "it/s" in gradnas_run["stderr"]  # tqdm bars


def test_python_dash_m_entry_point_with_quiet_prints_no_progress(fastnas_run: dict) -> None:
    assert fastnas_run["code"] == 0, fastnas_run["stderr"][-2000:]
    stderr = fastnas_run["stderr"]
    assert "Traceback" not in stderr
    assert "it/s" not in stderr and "%|" not in stderr and "\r" not in stderr, stderr[:500]
    assert "loading model" not in stderr
    assert "fastnas on byte-mlp-tiny at params=75%" in fastnas_run["stdout"]
    assert fastnas_run["checkpoint"].is_file()  # --checkpoint puts the state where it says
    assert not (fastnas_run["out"] / ".checkpoints").exists()


# --- checkpoints and resuming -----------------------------------------------------------------


def rerun_in_copy(run: dict, tmp_path: Path, *extra: str) -> tuple[int, str, dict]:
    """Rerun ``run``'s command (plus ``extra``) on a copy of its output folder."""
    out = tmp_path / "out"
    shutil.copytree(run["out"], out)
    argv = [*run["argv"], "--quiet", *extra]
    argv[argv.index("--out") + 1] = str(out)
    code, _, stderr = run_main(argv)
    return code, stderr, read_summary(out) if code == 0 else {}


def test_rerunning_the_same_command_resumes_with_the_same_result(
    gradnas_run: dict, tmp_path: Path
) -> None:
    assert gradnas_run["code"] == 0
    first = read_summary(gradnas_run["out"])
    code, stderr, again = rerun_in_copy(gradnas_run, tmp_path)
    assert code == 0, stderr
    assert again["search"]["resumed_from_checkpoint"] is True
    assert again["hparams"] == first["hparams"]
    assert read_metadata(tmp_path / "out")["config"] == read_metadata(gradnas_run["out"])["config"]
    assert again["perplexity"]["after"] == pytest.approx(first["perplexity"]["after"], rel=1e-6)


def test_a_new_budget_reuses_the_checkpoint(gradnas_run: dict, tmp_path: Path) -> None:
    assert gradnas_run["code"] == 0
    code, stderr, summary = rerun_in_copy(gradnas_run, tmp_path, "--constraint", "params=50%")
    assert code == 0, stderr
    assert summary["search"]["resumed_from_checkpoint"] is True
    assert summary["params"]["fraction"] <= 0.50


def test_a_checkpoint_of_other_calibration_data_is_not_reused(
    gradnas_run: dict, tmp_path: Path
) -> None:
    assert gradnas_run["code"] == 0
    code, stderr, summary = rerun_in_copy(gradnas_run, tmp_path, "--calibration-batches", "3")
    assert code == 0, stderr
    assert summary["search"]["resumed_from_checkpoint"] is False
    assert len(files_under(tmp_path / "out" / ".checkpoints")) == 2


def test_no_checkpoint_writes_no_checkpoint(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = search_argv(corpus, out, "--algo", "gradnas", "--constraint", "params=60%")
    code, _, stderr = run_main([*argv, "--no-checkpoint", "--quiet"])
    assert code == 0, stderr
    assert {p.relative_to(out).as_posix() for p in files_under(out)} == OUTPUT_FILES
    assert read_summary(out)["search"]["resumed_from_checkpoint"] is False
    assert not list(tmp_path.rglob("*.tmp"))


# --- interrupts -------------------------------------------------------------------------------


def test_ctrl_c_exits_130_and_the_rerun_resumes(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupt fastnas in the middle of measuring sensitivities, then rerun the command."""
    out = tmp_path / "out"
    argv = search_argv(corpus, out, "--algo", "fastnas", "--constraint", "params=70%", "--quiet")
    argv += ["--divisor", "8"]
    real_mean_loss = nasframe.app.job._mean_loss
    calls, interrupt_at = 0, 6  # one score per allowed size; the first hparam has 4 sizes

    def counting(model, batches):
        nonlocal calls
        calls += 1
        if calls == interrupt_at:
            raise KeyboardInterrupt
        return real_mean_loss(model, batches)

    monkeypatch.setattr(nasframe.app.job, "_mean_loss", counting)
    code, _, stderr = run_main(argv)
    assert code == EXIT_INTERRUPTED
    assert "Traceback" not in stderr
    assert "resume" in stderr.strip().splitlines()[-1]
    names = {p.name for p in files_under(out)}
    assert not names & OUTPUT_FILES, names  # no half-written model or summary
    assert not [name for name in names if name.endswith(".tmp")]
    (checkpoint,) = files_under(out / ".checkpoints")
    done = set(json.loads(checkpoint.read_text(encoding="utf-8"))["sensitivity"])
    assert done, "the interrupt came before the first sensitivity was saved"

    calls, interrupt_at = 0, None
    code, _, stderr = run_main(argv)
    assert code == 0, stderr
    summary = read_summary(out)
    assert summary["search"]["resumed_from_checkpoint"] is True
    # Only the hparams the interrupted run had not finished were scored again.
    remaining = [name for name in summary["hparams"] if name not in done]
    assert calls == sum(
        len(ChoiceRule(divisor=8).choices(summary["hparams"][name]["max"])) for name in remaining
    )
    assert summary["params"]["fraction"] <= 0.70


def test_sigterm_exits_143_and_the_rerun_resumes(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduler's SIGTERM mid-search stops cleanly, keeping the checkpoint."""
    import signal

    out = tmp_path / "out"
    argv = search_argv(corpus, out, "--algo", "fastnas", "--constraint", "params=70%", "--quiet")
    real_mean_loss = nasframe.app.job._mean_loss
    calls = 0

    def counting(model, batches):
        nonlocal calls
        calls += 1
        if calls == 6:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_mean_loss(model, batches)

    monkeypatch.setattr(nasframe.app.job, "_mean_loss", counting)
    previous_handler = signal.getsignal(signal.SIGTERM)
    code, _, stderr = run_main(argv)
    assert code == EXIT_TERMINATED
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("nasframe: terminated; rerun the same")
    assert signal.getsignal(signal.SIGTERM) == previous_handler  # restored
    names = {p.name for p in files_under(out)}
    assert not names & OUTPUT_FILES, names
    (checkpoint,) = files_under(out / ".checkpoints")
    assert json.loads(checkpoint.read_text(encoding="utf-8"))["sensitivity"]

    monkeypatch.setattr(nasframe.app.job, "_mean_loss", real_mean_loss)
    code, _, stderr = run_main(argv)
    assert code == 0, stderr
    assert read_summary(out)["search"]["resumed_from_checkpoint"] is True


# --- bad input --------------------------------------------------------------------------------


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
