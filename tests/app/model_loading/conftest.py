"""Fixtures of the model-loading tests: one thread, and a tiny Llama directory and a corpus
made once for the whole folder (transformers is imported only when a test asks for them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads; on 2 shared cores they only slow down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="package")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hf_models.pretrained import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="package")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hf_models.pretrained import documents

    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text("\n\n".join(documents(120, seed=1)), encoding="utf-8")
    return path
