"""The house rules, held by reading the sources: no import cycle, the library never imports
the application, the core never imports a plugin, a child module never imports from its
package's ``__init__``, and files and folders stay small."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Top-level package -> the folder that holds it.
PACKAGES = {
    "nasframe": ROOT,
    "gradnas": ROOT / "plugins" / "gradnas",
    "fastnas": ROOT / "plugins" / "fastnas",
    "nasframe_transformers": ROOT / "plugins" / "transformers",
    "nasframe_example_plugin": ROOT / "examples" / "nasframe-example-plugin" / "src",
}
PLUGINS = ("gradnas", "fastnas", "nasframe_transformers", "nasframe_example_plugin")
APP = "nasframe.app"
# ``python -m nasframe`` runs the CLI: the one library file that names the application.
ENTRY_SHIM = "nasframe.__main__"
MAX_LINES = 350
MAX_MODULES_PER_FOLDER = 12
SOURCE_TREES = ("nasframe", "plugins", "examples", "tests", "benchmarks")


def module_files() -> dict[str, Path]:
    """Every module of every package, by dotted name (packages by their own name)."""
    modules: dict[str, Path] = {}
    for package, base in PACKAGES.items():
        for path in sorted((base / package).rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


MODULES = module_files()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements at any depth, except those only a type checker runs."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (n for child in node.orelse for n in _import_nodes_of(child))
            continue
        yield from _import_nodes_of(node)


def _import_nodes_of(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    else:
        yield from _import_nodes(node)


def imports_of(module: str) -> set[tuple[str, str | None]]:
    """``(imported module, name taken from its __init__ or None)`` for each import."""
    found: set[tuple[str, str | None]] = set()
    is_package = MODULES[module].name == "__init__.py"
    for node in _import_nodes(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update((alias.name, None) for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            found.add((submodule, None) if submodule in MODULES else (base, alias.name))
    return {(name, taken) for name, taken in found if name.split(".")[0] in PACKAGES}


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (importing ``a.b.c`` runs ``a`` and ``a.b``)."""
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        targets: set[str] = set()
        for name, _ in imports_of(module):
            parts = name.split(".")
            targets.update(
                ".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i])
            )
        targets = {t for t in targets if t in MODULES}
        # A package's own __init__ runs before its children, so a child importing an ancestor
        # package is no cycle by itself; what a child takes from an __init__ is checked below.
        graph[module] = {t for t in targets if not module.startswith(t + ".") and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_every_package_and_its_imports() -> None:
    assert {"nasframe.space.convert", "gradnas.searcher", APP + ".cli"} <= set(MODULES)
    assert "nasframe.space.search_space" in import_graph()["nasframe.space.convert"]


def test_no_import_cycle_anywhere() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_library_never_imports_the_application() -> None:
    library = [m for m in MODULES if m.split(".")[0] == "nasframe" and not _in_app(m)]
    offenders = {
        m: sorted(t for t in import_graph()[m] if _in_app(t)) for m in library if m != ENTRY_SHIM
    }
    assert {m: t for m, t in offenders.items() if t} == {}


def test_the_core_never_imports_a_plugin() -> None:
    core = [m for m in MODULES if m.split(".")[0] == "nasframe"]
    offenders = {
        m: sorted(t for t in import_graph()[m] if t.split(".")[0] in PLUGINS) for m in core
    }
    assert {m: t for m, t in offenders.items() if t} == {}


def test_a_child_module_never_imports_from_its_packages_init() -> None:
    offenders = {}
    for module in MODULES:
        taken = sorted(
            f"{name}.{attr}"
            for name, attr in imports_of(module)
            if attr is not None and name in MODULES and module.startswith(name + ".")
        )
        if taken:
            offenders[module] = taken
    assert offenders == {}


def _in_app(module: str) -> bool:
    return module == APP or module.startswith(APP + ".")


def _source_files() -> list[Path]:
    return sorted(p for tree in SOURCE_TREES for p in (ROOT / tree).rglob("*.py"))


@pytest.mark.parametrize("path", _source_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_source_file_is_longer_than_the_limit(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines"


def test_no_folder_holds_more_modules_than_the_limit() -> None:
    folders: dict[Path, int] = {}
    for path in _source_files():
        if path.name != "__init__.py":
            folders[path.parent] = folders.get(path.parent, 0) + 1
    crowded = {
        str(folder.relative_to(ROOT)): count
        for folder, count in folders.items()
        if count > MAX_MODULES_PER_FOLDER
    }
    assert crowded == {}


def _imported_names(path: Path) -> set[str]:
    """Every module name an import in ``path`` names, at any depth (``a.b`` gives ``a.b``)."""
    names: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_test_module_imports_another_test_module() -> None:
    """What tests share lives in fixtures (conftest.py) or in helper modules not named test_*:
    importing a test module runs (and, under pytest, re-collects) its tests."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            name
            for name in _imported_names(path)
            if any(part.startswith("test_") for part in name.split("."))
        )
        for path in sorted((ROOT / "tests").rglob("*.py"))
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_test_module_check_sees_an_import_of_a_test_module(tmp_path: Path) -> None:
    path = tmp_path / "test_a.py"
    path.write_text("def f():\n    import test_b as b\nfrom helpers import test_c\n")
    assert _imported_names(path) >= {"test_b", "helpers.test_c"}
