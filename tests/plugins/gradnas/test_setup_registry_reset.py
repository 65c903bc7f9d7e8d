"""gradnas owns its hook spec, and resetting the plugin manager is the one reset there is:
a plugin installed in a running process contributes its gradient setup after
``reset_plugin_manager()`` alone (no ``SETUP_GRADIENT_FUNC.reload()``)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from gradnas.registry import gradnas_plugin_manager
from gradnas.searcher import GradientBinarySearcher

import nasframe.hookspecs
from nasframe.plugins import reset_plugin_manager

PLUGIN = """
from nasframe.hookspecs import hookimpl
from nasframe.space.dynamic import DynamicModule


class ResetProbe(DynamicModule):
    SLOTS = {}


def setup_probe(module):
    return None


@hookimpl
def nasframe_gradient_setups():
    return {ResetProbe: setup_probe}
"""


@pytest.fixture
def site(tmp_path: Path):
    """A directory to "pip install" a plugin into (its module and entry point); removed and
    the manager reset again afterwards."""
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("reset_probe_plugin", None)
        importlib.invalidate_caches()
        reset_plugin_manager()


def _install(site: Path) -> None:
    (site / "reset_probe_plugin.py").write_text(PLUGIN)
    info = site / "reset_probe_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: reset-probe-plugin\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text("[nasframe]\nreset-probe = reset_probe_plugin\n")
    importlib.invalidate_caches()


def _probe_names() -> set[str]:
    return {cls.__name__ for cls in GradientBinarySearcher.SETUP_GRADIENT_FUNC}


def test_resetting_the_plugin_manager_alone_shows_gradnas_a_new_setup(site: Path) -> None:
    assert "ResetProbe" not in _probe_names()  # read once before the install
    _install(site)
    assert "ResetProbe" not in _probe_names()  # the manager was built before the install
    reset_plugin_manager()
    assert "ResetProbe" in _probe_names()


def test_setups_added_directly_survive_a_reset() -> None:
    class Direct:
        pass

    def setup(module):
        return None

    registry = GradientBinarySearcher.SETUP_GRADIENT_FUNC
    registry[Direct] = setup
    try:
        reset_plugin_manager()
        assert registry[Direct] is setup
    finally:
        del registry[Direct]
    assert Direct not in registry


def test_gradnas_adds_its_own_hook_spec_to_each_new_manager() -> None:
    assert not hasattr(nasframe.hookspecs, "nasframe_gradient_setups")
    reset_plugin_manager()
    manager = gradnas_plugin_manager()
    assert manager.hook.nasframe_gradient_setups.spec is not None
    assert gradnas_plugin_manager() is manager  # adding it twice would raise
