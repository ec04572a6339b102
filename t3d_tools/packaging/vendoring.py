"""What a packed bundle vendors from ``custom/`` and which third-party packages its metadata must name.

This repository's ``custom/`` package, the bundles' runtime code, is vendored whole as ``<name>/custom/`` (its modules
and its package data, the zero-shot prompt sets ``custom/data/prompts/*.json``) so the unzipped bundle runs from its
own folder in an environment that has only the packages its ``metadata.json`` names (torch, monai, numpy and
``required_packages_version``). Every module of ``custom/`` the packed bundle's configs reach (any ``_target_`` or
``$`` expression, through Python imports) must import only third-party packages the metadata names: another one stops
the pack with an error naming both.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import sys
from collections.abc import Iterable

from t3d_tools import REPO_ROOT
from t3d_tools.packaging.errors import PackError

__all__ = [
    "REPO_ROOT",
    "CUSTOM_DIR",
    "bundle_requirements",
    "config_module_names",
    "module_closure",
    "vendored_modules",
    "runtime_files",
    "check_third_party",
]

CUSTOM_DIR = os.path.join(REPO_ROOT, "custom")
_BASE_PACKAGES = {"torch": "pytorch_version", "monai": "monai_version", "numpy": "numpy_version"}


def bundle_requirements(metadata: dict) -> list[str]:
    """pip requirement lines for exactly the packages a bundle's metadata names (torch first: install it alone)."""
    lines = [f"{pkg}=={metadata[key]}" for pkg, key in _BASE_PACKAGES.items() if metadata.get(key)]
    lines += [f"{pkg}=={ver}" for pkg, ver in sorted(metadata.get("required_packages_version", {}).items())]
    return lines


def _module_file(module: str) -> str | None:
    """``custom.a.b`` -> path of its .py file or package __init__, or None when it is not a module of custom/."""
    rel = os.path.join(os.path.dirname(CUSTOM_DIR), *module.split("."))
    for candidate in (rel + ".py", os.path.join(rel, "__init__.py")):
        if os.path.isfile(candidate):
            return candidate
    return None


def _longest_module(dotted: str) -> str | None:
    """The longest prefix of ``custom.a.b.C`` that is a module of custom/ (``custom.a.b``), or None."""
    parts = dotted.split(".")
    return next(
        (".".join(parts[:end]) for end in range(len(parts), 0, -1) if _module_file(".".join(parts[:end]))), None
    )


def _expression_names(expression: str) -> set[str]:
    """``custom.*`` dotted names an expression (``$...`` string) uses: ``$import custom.x``, ``$from custom.x import
    y`` (``custom.x.y`` too: ``y`` may be a module), ``$custom.x.f(...)``."""
    body = expression[1:].strip()
    names = set(re.findall(r"\bcustom(?:\.[A-Za-z_]\w*)+", body))
    match = re.fullmatch(r"from\s+(custom(?:\.\w+)*)\s+import\s+(.+)", body)
    if match:
        names.add(match.group(1))
        names.update(f"{match.group(1)}.{n.split(' as ')[0].strip()}" for n in match.group(2).split(","))
    elif re.fullmatch(r"import\s+custom\b.*", body):
        names.add("custom")
    return names


def _config_names(value: object) -> set[str]:
    """``custom.*`` names of one parsed config: every ``_target_`` and every ``$`` expression, at any depth."""
    names: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "_target_" and isinstance(item, str) and item.split(".")[0] == "custom":
                names.add(item)
            names |= _config_names(item)
    elif isinstance(value, list):
        for item in value:
            names |= _config_names(item)
    elif isinstance(value, str) and value.startswith("$"):
        names |= _expression_names(value)
    return names


def config_module_names(config_dir: str) -> dict[str, set[str]]:
    """``{config file: custom.* names it uses}`` for every config of a bundle (``configs/*.json`` but
    ``metadata.json``, which is read, never run)."""
    found = {}
    for file_name in sorted(os.listdir(config_dir)):
        if not file_name.endswith(".json") or file_name == "metadata.json":
            continue
        path = os.path.join(config_dir, file_name)
        with open(path, encoding="utf-8") as f:
            try:
                content = json.load(f)
            except json.JSONDecodeError as err:
                raise PackError(f"{path}: expected a JSON config, found invalid JSON ({err})") from None
        found[file_name] = _config_names(content)
    return found


def _config_modules(config_dir: str) -> set[str]:
    """The modules of custom/ (longest module prefix of each name) a bundle's configs use."""
    names = set().union(*config_module_names(config_dir).values()) if os.path.isdir(config_dir) else set()
    return {m for m in map(_longest_module, names) if m}


def _imports(path: str, module: str) -> set[str]:
    """Absolute names imported by a module (relative imports resolved against ``module``), at any depth (imports
    inside functions count: they run when the function does)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # "from pkg import module"
    return names


def module_closure(modules: Iterable[str]) -> tuple[dict[str, str], set[str]]:
    """``{module: file}`` of ``modules`` and of every module of custom/ they import, transitively, with every parent
    package's ``__init__``; and the top-level third-party names those modules import."""
    todo, closure, third_party = sorted(set(modules)), {}, set()
    while todo:
        parts = todo.pop().split(".")
        for end in range(1, len(parts) + 1):  # the module and its parent packages
            module = ".".join(parts[:end])
            path = _module_file(module)
            if not path or module in closure:
                continue
            closure[module] = path
            for name in _imports(path, module):
                top = name.split(".")[0]
                if top == "custom":
                    resolved = _longest_module(name)
                    if resolved and resolved not in closure:
                        todo.append(resolved)
                elif top and top != "__future__" and top not in sys.stdlib_module_names:
                    third_party.add(top)
    return closure, third_party


def vendored_modules(config_dir: str) -> tuple[dict[str, str], set[str]]:
    """Modules of custom/ one bundle's configs need, transitively, and the third-party names they import."""
    return module_closure(_config_modules(config_dir))


def runtime_files() -> list[tuple[str, str]]:
    """(source, path inside the bundle) of every file of ``custom/`` (Python modules and package data; no bytecode,
    caches or hidden files): the runtime ships whole, so one process serving several bundles (MONAI Label puts each
    bundle folder on ``sys.path`` and imports ``custom`` once, from the first) finds every bundle's modules in it."""
    root = os.path.dirname(CUSTOM_DIR)
    files = []
    for folder, dirs, names in os.walk(CUSTOM_DIR):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        files += [
            os.path.join(folder, n) for n in sorted(names) if not n.startswith(".") and not n.endswith((".pyc", ".pyo"))
        ]
    return [(source, os.path.relpath(source, root)) for source in files]


def check_third_party(name: str, metadata: dict, third_party: set[str]) -> None:
    """Every third-party import of the vendored code must come from a package the metadata names."""
    packages = list(_BASE_PACKAGES) + list(metadata.get("required_packages_version", {}))
    named = {p.lower().replace("_", "-") for p in packages}
    distributions = importlib.metadata.packages_distributions()
    for top in sorted(third_party):
        dists = {d.lower().replace("_", "-") for d in distributions.get(top, [top])}
        if not dists & named:
            raise PackError(
                f"{name}: vendored custom/ code imports {top!r} (package {sorted(dists)[0]}), which metadata.json "
                "does not name: add it to required_packages_version"
            )
