"""Fixtures of the CLI tests, made once for the whole folder: byte-mlp-tiny trained once, the
corpus, the one real ``python -m nasframe`` subprocess (fastnas) and one in-process gradnas
search that runs alongside it."""

from __future__ import annotations

import copy
import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from cli_runner import run_main
from cli_support import search_argv, write_corpus

import nasframe
import nasframe.app.job
from nasframe.app.model_registry import ModelBundle, ModelEntry


@pytest.fixture(scope="package", autouse=True)
def train_tiny_model_once() -> Iterator[None]:
    """Train byte-mlp-tiny once for all in-process searches (seconds each on a busy machine).

    Its training is deterministic, so a trained copy is what every job would get anyway; each
    job gets its own deep copy because jobs prune the model in place. The subprocess run and
    ``nasframe.load`` go through the real registry.
    """
    real_get = nasframe.app.job.get_model_entry
    trained: list[ModelBundle] = []

    def load_copy(progress: bool = True, trust_remote_code: bool = False) -> ModelBundle:
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


@pytest.fixture(scope="package")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("data") / "corpus.txt")


@pytest.fixture(scope="package")
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


@pytest.fixture(scope="package")
def fastnas_run(fastnas_process: dict) -> dict:
    code = fastnas_process["process"].wait(timeout=300)
    logs = fastnas_process["logs"]
    return {
        **fastnas_process,
        "code": code,
        "stdout": (logs / "stdout").read_text(encoding="utf-8"),
        "stderr": (logs / "stderr").read_text(encoding="utf-8"),
    }


@pytest.fixture(scope="package")
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
