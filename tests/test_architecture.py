"""The core never imports a plugin; the algorithms arrive through entry points."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import nasframe

PLUGINS = ("gradnas", "fastnas", "nasframe_transformers")
CORE = Path(nasframe.__file__).resolve().parent
ROOT = CORE.parent


def imported_modules(source: str) -> set[str]:
    """Every module ``source`` imports (statements at any depth, ``import_module("...")``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(str(node.args[0].value))
    return names


def test_core_sources_import_no_plugin() -> None:
    files = sorted(CORE.rglob("*.py"))
    assert len(files) > 10
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            name
            for name in imported_modules(path.read_text(encoding="utf-8"))
            if name.split(".")[0] in PLUGINS
        )
        for path in files
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_static_check_sees_imports_anywhere() -> None:
    source = (
        "import os\n"
        "def f():\n"
        "    import gradnas.setups\n"
        "    from fastnas import x\n"
        "    from . import relative\n"
        "    return importlib.import_module('gradnas')\n"
    )
    assert imported_modules(source) == {"os", "gradnas.setups", "fastnas", "gradnas"}


IMPORT_EVERYTHING = """
import importlib, pkgutil, sys
import nasframe
names = [
    m.name
    for m in pkgutil.walk_packages(nasframe.__path__, "nasframe.")
    if not m.name.endswith("__main__")  # running it is running the CLI
]
for name in names:
    importlib.import_module(name)
assert "nasframe.plugins" in names and "nasframe.space" in names, names
import nasframe.plugins
assert nasframe.plugins.get_plugin_manager.cache_info().currsize == 0, "manager was built"
plugins = ("gradnas", "fastnas", "nasframe_transformers")
print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] in plugins)))
"""


def test_importing_every_core_module_loads_no_plugin() -> None:
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_algorithms_are_registered_as_entry_points() -> None:
    found = {ep.name: ep.value for ep in entry_points(group="nasframe")}
    assert found.get("gradnas") == "gradnas.plugin"
    assert found.get("fastnas") == "fastnas.plugin"


def test_the_plugin_manager_finds_the_algorithms_through_entry_points() -> None:
    from nasframe.plugins import algorithm_names, get_algorithm, get_plugin_manager

    names = {name for name, _ in get_plugin_manager().list_name_plugin()}
    assert {"gradnas", "fastnas", "nasframe.builtin"} <= names
    assert {"gradnas", "fastnas"} <= set(algorithm_names())
    assert get_algorithm("fastnas").__module__.startswith("fastnas.")
    assert get_algorithm("gradnas").__module__.startswith("gradnas.")


WITHOUT_TRANSFORMERS = """
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "transformers":
            raise ImportError("transformers is blocked in this test")

sys.meta_path.insert(0, Block())
from nasframe.plugins import algorithm_names, get_plugin_manager
get_plugin_manager()
print(",".join(algorithm_names()))
"""


def test_nasframe_works_where_transformers_is_not_installed() -> None:
    """The transformers plugin is always installed but imports transformers only when used."""
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TRANSFORMERS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "fastnas,gradnas"
