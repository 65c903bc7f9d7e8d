"""Every model loader takes ``progress`` and ``trust_remote_code``: ``load_bundle`` passes both
and sniffs no signatures; a model no plugin resolves names the plugin that is missing."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from nasframe.app.model_registry import ModelBundle, ModelEntry, get_model_entry, model_entries
from nasframe.errors import UserInputError


def test_load_bundle_passes_both_flags_by_keyword() -> None:
    seen: list[dict[str, bool]] = []
    bundle = ModelBundle(torch.nn.Identity(), list, "recorded")

    def load(**flags: bool) -> ModelBundle:
        seen.append(flags)
        return bundle

    entry = ModelEntry("recording loader", load, dict)
    assert entry.load_bundle(progress=False) is bundle
    assert entry.load_bundle(progress=True, trust_remote_code=True) is bundle
    assert seen == [
        {"progress": False, "trust_remote_code": False},
        {"progress": True, "trust_remote_code": True},
    ]


def test_a_loader_without_the_flag_is_a_programming_error() -> None:
    """No signature sniffing: the contract is the two keywords."""
    entry = ModelEntry("old loader", lambda progress=True: None, dict)
    with pytest.raises(TypeError, match="trust_remote_code"):
        entry.load_bundle(progress=False)


@pytest.mark.parametrize("name", sorted(model_entries()))
def test_every_registered_loader_takes_trust_remote_code(name: str) -> None:
    parameters = inspect.signature(model_entries()[name].load).parameters
    assert {"progress", "trust_remote_code"} <= set(parameters)


def test_resolved_loaders_take_trust_remote_code(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    parameters = inspect.signature(get_model_entry(str(tmp_path)).load).parameters
    assert "trust_remote_code" in parameters


def test_an_unresolved_model_directory_names_the_missing_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nasframe.app.model_registry as registry

    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setattr(registry, "app_plugin_manager", _NoResolver)
    with pytest.raises(UserInputError) as error:
        get_model_entry(str(tmp_path))
    message = str(error.value)
    assert "nasframe_transformers.loading" in message and "ships with nasframe" in message
    assert "nasframe[transformers]" not in message


class _NoResolver:
    """A plugin manager in which no plugin resolves a spec."""

    class hook:  # noqa: N801 - mirrors pluggy's attribute
        @staticmethod
        def nasframe_resolve_model(spec: str) -> None:
            return None
