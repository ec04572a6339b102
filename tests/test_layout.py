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
