"""``--trust-remote-code``: it reaches the loader only when given, and transformers is always
told explicitly whether to trust a model's own code."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from cli_runner import run_main  # noqa: E402
from loading_support import search_argv  # noqa: E402

import nasframe  # noqa: E402
import nasframe.app.job  # noqa: E402
from nasframe.app.cli import EXIT_USAGE  # noqa: E402
from nasframe.app.model_registry import ModelBundle, ModelEntry, get_model_entry  # noqa: E402
from nasframe.errors import UserInputError  # noqa: E402


def test_trust_remote_code_reaches_the_loader_only_when_given(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []

    def load(progress: bool = True, trust_remote_code: bool = False) -> ModelBundle:
        seen.append(trust_remote_code)
        raise UserInputError("stop here.")

    entry = ModelEntry("recording loader", load, lambda **kwargs: torch.nn.Identity())
    monkeypatch.setattr(nasframe.app.job, "get_model_entry", lambda name: entry)
    for extra in ([], ["--trust-remote-code"]):
        code, _, stderr = run_main(search_argv("any", corpus, tmp_path / "out", *extra))
        assert (code, stderr.strip()) == (EXIT_USAGE, "nasframe: error: stop here.")
    assert seen == [False, True]


@pytest.mark.parametrize("trust", [False, True])
def test_transformers_is_always_told_whether_to_trust_remote_code(
    trust: bool, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Explicitly, never left unset: unset, transformers asks on stdin for custom code."""
    calls: list[object] = []
    for auto in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        real = auto.from_pretrained

        def recording(*args, _real=real, **kwargs):
            calls.append(kwargs.get("trust_remote_code", "unset"))
            return _real(*args, **kwargs)

        monkeypatch.setattr(auto, "from_pretrained", recording)
    get_model_entry(str(model_dir)).load_bundle(progress=False, trust_remote_code=trust)
    assert calls == [trust, trust]
