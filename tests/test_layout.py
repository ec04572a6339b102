"""The runtime / tooling boundary: ``custom/`` (what bundles run, shipped whole in every zip) never imports
``t3d_tools/`` (repository tooling that never ships), and every ``custom.*`` name a bundle config uses is a module,
class or function of ``custom/``."""

from __future__ import annotations

import ast
import importlib
import os
import pathlib

from t3d_tools.packaging.pack import config_module_names

REPO = pathlib.Path(__file__).resolve().parents[1]


def _imported_names(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_runtime_never_imports_tooling():
    offenders = {
        str(path.relative_to(REPO)): sorted(n for n in _imported_names(path) if n.split(".")[0] == "t3d_tools")
        for path in sorted((REPO / "custom").rglob("*.py"))
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, offenders
    # the check above sees imports: a tooling module that imports nothing would pass it, so check one is found
    assert "t3d_tools.packaging.pack" in _imported_names(pathlib.Path(__file__))


def test_every_config_name_lives_in_the_runtime():
    checked = 0
    for bundle in sorted(os.listdir(REPO / "bundles")):
        for config, names in config_module_names(str(REPO / "bundles" / bundle / "configs")).items():
            for name in sorted(names):
                module, _, attribute = name.rpartition(".")
                try:
                    found = importlib.import_module(name)
                except ImportError:
                    found = getattr(importlib.import_module(module), attribute, None)
                assert found is not None, f"bundles/{bundle}/configs/{config}: {name} is not in custom/"
                checked += 1
    assert checked > 50, checked  # every bundle's configs name custom/ code


def _package_imports() -> dict[str, set[str]]:
    """``{package: packages it imports}`` over custom/'s sub-packages; the ground floor (``custom/errors.py``,
    ``custom/distributed.py``) is the package ``custom``. Imports inside functions count too."""
    graph: dict[str, set[str]] = {}
    for path in sorted((REPO / "custom").rglob("*.py")):
        parts = path.relative_to(REPO / "custom").parts
        package = parts[0] if len(parts) > 1 else "custom"
        for name in _imported_names(path):
            top = name.split(".")
            if top[0] == "custom":
                target = top[1] if len(top) > 1 and (REPO / "custom" / top[1]).is_dir() else "custom"
                if target != package:
                    graph.setdefault(package, set()).add(target)
    return graph


def test_custom_packages_import_each_other_without_a_cycle():
    """Issue #30: shared pieces live on the ground floor, so no package reaches up (a cycle between packages would
    mean one does). The ground floor itself imports no package of custom/."""
    graph = _package_imports()
    assert not graph.get("custom"), graph.get("custom")
    state: dict[str, str] = {}

    def visit(package: str, path: list[str]) -> None:
        state[package] = "open"
        for target in sorted(graph.get(package, ())):
            assert state.get(target) != "open", f"import cycle between packages: {' -> '.join(path + [target])}"
            if target not in state:
                visit(target, path + [target])
        state[package] = "done"

    for package in sorted(graph):
        if package not in state:
            visit(package, [package])
    assert {"transforms", "custom"} <= graph["data"]  # the imports were read (a graph of no edges has no cycle)
