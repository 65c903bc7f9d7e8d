"""``nasframe search --device/--dtype``: bf16 weights on the CPU end to end (the summary
records where and in what dtype the model ran), and CUDA asked for where there is none is one
error line with exit code 2, before any model loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import torch
from cli_runner import run_main
from cli_support import read_summary, search_argv

import nasframe
from nasframe.app.cli import EXIT_USAGE
from nasframe.app.job_settings import resolve_device
from nasframe.app.model_registry import get_model_entry
from nasframe.errors import UserInputError


@pytest.fixture(scope="module")
def bf16_run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bf16") / "out"
    argv = search_argv(corpus, out, "--algo", "gradnas", "--constraint", "params=70%")
    argv += ["--divisor", "8", "--quiet", "--device", "cpu", "--dtype", "bfloat16"]
    code, stdout, stderr = run_main(argv)
    return {"code": code, "stdout": stdout, "stderr": stderr, "out": out}


def test_bfloat16_weights_on_the_cpu_run_end_to_end(bf16_run: dict) -> None:
    assert bf16_run["code"] == 0, bf16_run["stderr"][-2000:]
    summary = read_summary(bf16_run["out"])
    assert summary["device"] == "cpu" and summary["dtype"] == "bfloat16"
    assert summary["settings"]["device"] == "cpu" and summary["settings"]["dtype"] == "bfloat16"
    for when in ("before", "after"):
        assert 1.0 < summary["perplexity"][when] < 1e6
    assert summary["params"]["fraction"] <= 0.70 + 1e-9
    assert summary["reconstruct"]["reconstructed"], "lsq repaired nothing in bf16"
    weights = safetensors.torch.load_file(bf16_run["out"] / "model.safetensors")
    floats = {t.dtype for t in weights.values() if t.is_floating_point()}
    assert floats == {torch.bfloat16}
    loaded = nasframe.load(bf16_run["out"])
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}


def test_the_default_device_is_auto_and_the_default_dtype_the_models(
    corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    argv = search_argv(corpus, out, "--algo", "gradnas", "--constraint", "params=90%")
    code, _, stderr = run_main([*argv, "--divisor", "8", "--quiet", "--reconstruct", "none"])
    assert code == 0, stderr[-2000:]
    summary = read_summary(out)
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert summary["device"] == expected and summary["dtype"] == "float32"
    assert summary["settings"]["device"] == "auto" and summary["settings"]["dtype"] is None


def test_the_byte_mlp_loader_puts_its_model_in_the_dtype_asked_for() -> None:
    bundle = get_model_entry("byte-mlp-tiny").load_bundle(progress=False, dtype=torch.bfloat16)
    assert {p.dtype for p in bundle.model.parameters()} == {torch.bfloat16}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_without_cuda_is_one_error_line_and_exit_code_2(
    device: str, corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = run_main(search_argv(corpus, out, "--device", device))
    assert code == EXIT_USAGE and stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"nasframe: error: --device {device} asks for CUDA")
    assert "--device cpu" in lines[0]
    assert not out.exists()  # refused before anything was loaded or written


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "mps"])
def test_a_device_that_is_no_device_is_one_error_line(
    device: str, corpus: Path, tmp_path: Path
) -> None:
    code, _, stderr = run_main(search_argv(corpus, tmp_path / "out", "--device", device))
    assert code == EXIT_USAGE
    assert stderr.strip() == (
        f"nasframe: error: --device {device} is not a device; pass auto, cpu, cuda or cuda:N."
    )


def test_an_unknown_dtype_is_a_usage_error(corpus: Path, tmp_path: Path) -> None:
    code, _, stderr = run_main(search_argv(corpus, tmp_path / "out", "--dtype", "int8"))
    assert code == EXIT_USAGE and "--dtype" in stderr and "bfloat16" in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_auto_is_the_cpu_without_cuda_and_cpu_is_always_the_cpu() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(UserInputError, match="no usable CUDA GPU"):
            resolve_device("cuda")
