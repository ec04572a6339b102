"""Pack a bundle into ``dist/<name>_v<version>.zip``, the archive ``python -m monai.bundle download`` unpacks.

The zip holds one folder, ``<name>/``: the bundle's ``configs/``, ``docs/``, ``LICENSE``, the trained weights
``models/model.pt`` (or, above ``max_inline_mb``, a ``large_files.yml`` naming their URL and sha256, which
``python -m monai.bundle download_large_files`` reads) with the ``*.json`` files written beside them (class names,
thresholds), and this repository's ``custom/`` package (less its packaging and
serving tools), vendored as ``<name>/custom/`` so the unzipped bundle runs from its own folder in an environment that
has only the packages its ``metadata.json`` names (torch, monai, numpy and ``required_packages_version``).
A module the configs use (directly or through imports) that imports any other third-party package stops the pack with
an error naming both.

It also adds ``<name>_v<version>: {checksum: sha1, source: URL}`` to a ``model_info.json`` in the form MONAI's
GitHub source reads (``models/model_info.json`` of a model-zoo style repository), with the release-asset URL
``https://github.com/<repo>/releases/download/hosting_storage_v1/<name>_v<version>.zip``.

MONAI parses names and versions out of file names: ``re.split(r"_v\\d*.", asset)[0]`` is taken as the name (so a
name may not contain ``_v``) and versions are compared as *strings* (``sorted``), so ``0.10.0`` sorts before
``0.9.0``; both are refused here rather than published and silently mis-resolved.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterable

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CUSTOM_DIR = os.path.join(REPO_ROOT, "custom")
DEFAULT_RELEASE_TAG = "hosting_storage_v1"
# run outputs that never ship (they are git-ignored in the repository as well)
_SKIPPED_DIRS = {"data", "eval", "runs", "models", "__pycache__", ".pytest_cache", "custom"}
_REPO_TOOLING = {"packaging", "serving"}  # parts of custom/ that are this repository's tools, not bundle code
_MONAI_NAME_SPLIT = re.compile(r"_v\d*.")  # monai.bundle.scripts._get_all_bundles_info
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same inputs give the same bytes and checksum
_BASE_PACKAGES = {"torch": "pytorch_version", "monai": "monai_version", "numpy": "numpy_version"}


class PackError(ValueError):
    """A bundle that cannot be packed as asked; the message is one line."""


def check_name_and_version(name: str, version: str) -> None:
    """Refuse a name or version MONAI's download-by-name would mis-parse."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_]*", name):
        raise PackError(f"bundle name {name!r}: use letters, digits and underscores only")
    parsed = _MONAI_NAME_SPLIT.split(f"{name}_v{version}.zip")[0]
    if parsed != name:
        raise PackError(f"bundle name {name!r} contains '_v': MONAI would read the asset name as {parsed!r}")
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise PackError(f"{name}: version {version!r} is not MAJOR.MINOR.PATCH digits")


def check_version_order(name: str, version: str, known_versions: Iterable[str]) -> None:
    """MONAI picks the latest version with ``sorted(versions)[-1]`` on strings: the new one must win both orders."""
    versions = sorted(set(known_versions) | {version})
    numeric_latest = max(versions, key=lambda v: tuple(int(p) for p in v.split(".")))
    if versions[-1] != numeric_latest:
        raise PackError(
            f"{name}: versions {versions} sort differently as strings (MONAI's order, latest {versions[-1]}) and as "
            f"numbers (latest {numeric_latest}); choose a version that is last in both"
        )


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


def _config_modules(config_dir: str) -> set[str]:
    """The longest ``custom.x.y`` module prefix of every dotted name the bundle's configs mention."""
    found = set()
    for file_name in sorted(os.listdir(config_dir)):
        if not file_name.endswith(".json"):
            continue
        with open(os.path.join(config_dir, file_name), encoding="utf-8") as f:
            text = f.read()
        for dotted in re.findall(r"\bcustom(?:\.[A-Za-z_]\w*)+", text):
            parts = dotted.split(".")
            for end in range(len(parts), 0, -1):
                if _module_file(".".join(parts[:end])):
                    found.add(".".join(parts[:end]))
                    break
    return found


def _imports(path: str, module: str) -> set[str]:
    """Absolute names imported by a module (relative imports resolved against ``module``)."""
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


def vendored_modules(config_dir: str) -> tuple[dict[str, str], set[str]]:
    """Modules of custom/ the configs need, transitively (with every parent package's ``__init__``), and the
    top-level third-party names they import."""
    todo, modules, third_party = sorted(_config_modules(config_dir)), {}, set()
    while todo:
        module = todo.pop()
        parts = module.split(".")
        for end in range(1, len(parts) + 1):  # parent packages
            parent = ".".join(parts[:end])
            path = _module_file(parent)
            if path and parent not in modules:
                modules[parent] = path
                for name in _imports(path, parent):
                    top = name.split(".")[0]
                    if top == "custom":
                        resolved = next((".".join(name.split(".")[:e]) for e in range(name.count(".") + 1, 0, -1)
                                         if _module_file(".".join(name.split(".")[:e]))), None)
                        if resolved and resolved not in modules:
                            todo.append(resolved)
                    elif top and top != "__future__" and top not in sys.stdlib_module_names:
                        third_party.add(top)
    return modules, third_party


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


def vendored_files() -> list[tuple[str, str]]:
    """(source, path inside the bundle) of the vendored ``custom/`` package: all of it but this repository's own
    tooling (``packaging/``, ``serving/``). The whole package rather than only the modules a bundle uses, because one
    process serving several bundles (MONAI Label puts each bundle folder on ``sys.path``) imports ``custom`` once, from
    the first bundle, and must find every other bundle's modules there too. (Leaving ``custom`` a namespace package
    instead does not work: MONAI's ``$import`` refuses namespace packages.) Only the modules the bundle's configs use
    are checked against its metadata's packages (:func:`check_third_party`); the others are never imported by it."""
    root = os.path.dirname(CUSTOM_DIR)
    files = []
    for folder, dirs, names in os.walk(CUSTOM_DIR):
        rel = os.path.relpath(folder, CUSTOM_DIR)
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not (rel == "." and d in _REPO_TOOLING))
        files += [(os.path.join(folder, n), os.path.relpath(os.path.join(folder, n), root))
                  for n in sorted(names) if n.endswith(".py")]
    return files


def file_digest(path: str, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bundle_files(bundle_dir: str) -> list[tuple[str, str]]:
    """(source path, path inside the bundle) of every shipped file of the bundle folder, symlinks refused."""
    files = []
    for root, dirs, names in os.walk(bundle_dir):
        rel_root = os.path.relpath(root, bundle_dir)
        dirs[:] = sorted(d for d in dirs if not (rel_root == "." and d in _SKIPPED_DIRS) and d != "__pycache__")
        for file_name in sorted(names):
            source = os.path.join(root, file_name)
            if os.path.islink(source):
                raise PackError(f"{source}: symbolic links are not packed (they could point outside the bundle)")
            if file_name.endswith(".pyc"):
                continue
            files.append((source, os.path.normpath(os.path.join(rel_root, file_name))))
    return files


def _large_files_yml(path_in_bundle: str, url: str, sha256: str) -> str:
    return (
        "large_files:\n"
        f'  - path: "{path_in_bundle}"\n'
        f'    url: "{url}"\n'
        f'    hash_val: "{sha256}"\n'
        '    hash_type: "sha256"\n'
    )


def update_model_info(model_info_path: str, key: str, sha1: str, source: str) -> dict:
    """Add or replace ``key`` in a model-zoo ``model_info.json`` ({"<name>_v<version>": {"checksum", "source"}})."""
    info = {}
    if os.path.isfile(model_info_path):
        with open(model_info_path, encoding="utf-8") as f:
            info = json.load(f)
    info[key] = {"checksum": sha1, "source": source}
    os.makedirs(os.path.dirname(os.path.abspath(model_info_path)), exist_ok=True)
    with open(model_info_path, "w", encoding="utf-8") as f:
        json.dump(dict(sorted(info.items())), f, indent=4)
        f.write("\n")
    return info


def known_versions(model_info_path: str, name: str) -> list[str]:
    if not os.path.isfile(model_info_path):
        return []
    with open(model_info_path, encoding="utf-8") as f:
        info = json.load(f)
    return [key.split(f"{name}_v")[-1] for key in info if _MONAI_NAME_SPLIT.split(key)[0] == name]


def merged_inference_config(bundle_dir: str, overlays: list[str]) -> str:
    """``configs/inference.json`` with the values of ``overlays`` (file names in configs/) for the ids it already has,
    as JSON text; ids the inference config does not use (a training datalist, epochs) are left out."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(os.path.join(bundle_dir, "configs", "inference.json"))
    for overlay in overlays:
        with open(os.path.join(bundle_dir, "configs", overlay), encoding="utf-8") as f:
            values = json.load(f)
        for key, value in values.items():
            if key in parser:
                parser[key] = value
    config = {k: v for k, v in parser.get().items() if k != "_meta_"}
    return json.dumps(config, indent=4) + "\n"


def check_weights(name: str, weights: str) -> None:
    """The weights must load as tensors only (``weights_only=True``): what MONAI's loaders and MONAI Label read."""
    import torch

    try:
        torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means the file is not a loadable checkpoint
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PackError(f"{name}: {weights} does not load as a weights-only checkpoint ({reason})") from err


def resolve_bundle(bundle: str) -> str:
    """A bundle folder, given as a path or as a name under ``bundles/``."""
    for candidate in (bundle, os.path.join(REPO_ROOT, "bundles", bundle)):
        if os.path.isfile(os.path.join(candidate, "configs", "metadata.json")):
            return os.path.abspath(candidate)
    raise PackError(f"{bundle}: no bundle there (expected configs/metadata.json, also looked under bundles/)")


def pack(
    bundle: str,
    dist_dir: str = "dist",
    weights: str | None = None,
    max_inline_mb: float = 100.0,
    weights_url: str | None = None,
    repo: str = "OWNER/REPO",
    model_info: str | None = None,
    overlays: list[str] | None = None,
) -> str:
    """Build ``<dist_dir>/<name>_v<version>.zip``; returns its path. See the module docstring. ``overlays`` (e.g.
    ``["cpu_toy.json"]``) are merged into the packed ``inference.json``, for serving a CPU-toy-trained bundle."""
    bundle_dir = resolve_bundle(bundle)
    name = os.path.basename(bundle_dir.rstrip(os.sep))
    with open(os.path.join(bundle_dir, "configs", "metadata.json"), encoding="utf-8") as f:
        metadata = json.load(f)
    version = str(metadata.get("version", ""))
    check_name_and_version(name, version)
    model_info = model_info or os.path.join(dist_dir, "model_info.json")
    check_version_order(name, version, known_versions(model_info, name))

    weights = weights or os.path.join(bundle_dir, "models", "model.pt")
    if not os.path.isfile(weights):
        raise PackError(f"{name}: no trained weights at {weights} (train the bundle or pass --weights PATH)")
    check_weights(name, weights)
    modules, third_party = vendored_modules(os.path.join(bundle_dir, "configs"))
    check_third_party(name, metadata, third_party)

    replaced = {os.path.join("configs", "inference.json")} if overlays else set()
    entries = [(src, rel) for src, rel in _bundle_files(bundle_dir) if rel not in replaced]
    entries += vendored_files()
    large_files = None
    if os.path.getsize(weights) > max_inline_mb * 2**20:
        if not weights_url:
            raise PackError(
                f"{name}: weights are {os.path.getsize(weights) / 2**20:.0f} MB (> --max_inline_mb {max_inline_mb:g}); "
                "pass --weights_url where they will be hosted (large_files.yml)"
            )
        large_files = _large_files_yml("models/model.pt", weights_url, file_digest(weights, "sha256"))
    else:
        entries.append((weights, os.path.join("models", "model.pt")))
    # data-derived model files written beside the weights (class names, decision thresholds) ship with them
    weights_dir = os.path.dirname(os.path.abspath(weights))
    entries += [(os.path.join(weights_dir, f), os.path.join("models", f))
                for f in sorted(os.listdir(weights_dir)) if f.endswith(".json")]

    os.makedirs(dist_dir, exist_ok=True)
    key = f"{name}_v{version}"
    zip_path = os.path.join(dist_dir, f"{key}.zip")
    fd, tmp_path = tempfile.mkstemp(dir=dist_dir, suffix=".zip.part")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for source, rel in sorted(entries, key=lambda e: e[1]):
                info = zipfile.ZipInfo(f"{name}/{rel}".replace(os.sep, "/"), date_time=_ZIP_DATE)
                info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
                with open(source, "rb") as src, archive.open(info, "w") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            if overlays:
                info = zipfile.ZipInfo(f"{name}/configs/inference.json", date_time=_ZIP_DATE)
                merged = merged_inference_config(bundle_dir, overlays)
                archive.writestr(info, merged, compress_type=zipfile.ZIP_DEFLATED)
            if large_files:
                info = zipfile.ZipInfo(f"{name}/large_files.yml", date_time=_ZIP_DATE)
                archive.writestr(info, large_files, compress_type=zipfile.ZIP_DEFLATED)
        os.replace(tmp_path, zip_path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
    source_url = f"https://github.com/{repo}/releases/download/{DEFAULT_RELEASE_TAG}/{key}.zip"
    update_model_info(model_info, key, file_digest(zip_path, "sha1"), source_url)
    size_mb = os.path.getsize(zip_path) / 2**20
    print(f"packed {zip_path} ({size_mb:.1f} MB; custom/ vendored, {len(modules)} modules used; "
          f"weights {'in large_files.yml' if large_files else 'inside'}); {model_info}: {key}")
    return zip_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m custom.pack", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", help="bundle name under bundles/ or a bundle folder")
    parser.add_argument("--dist", default="dist", help="output folder (default: dist)")
    parser.add_argument("--weights", help="trained weights to ship as models/model.pt (default: the bundle's own)")
    parser.add_argument("--max_inline_mb", type=float, default=100.0, help="larger weights go to large_files.yml")
    parser.add_argument("--weights_url", help="where weights larger than --max_inline_mb will be downloaded from")
    parser.add_argument("--repo", default="OWNER/REPO",
                        help="GitHub owner/repo whose hosting_storage_v1 release hosts the zip")
    parser.add_argument("--model_info", help="model_info.json to update (default: <dist>/model_info.json)")
    parser.add_argument("--overlay", action="append", default=[],
                        help="bundle config merged into the packed inference.json (e.g. cpu_toy.json); repeatable")
    parser.add_argument("--print_requirements", action="store_true",
                        help="print the pip requirements the bundle's metadata names, and exit")
    args = parser.parse_args(argv)
    try:
        if args.print_requirements:
            with open(os.path.join(resolve_bundle(args.bundle), "configs", "metadata.json"), encoding="utf-8") as f:
                print("\n".join(bundle_requirements(json.load(f))))
            return 0
        pack(args.bundle, args.dist, args.weights, args.max_inline_mb, args.weights_url, args.repo, args.model_info,
             args.overlay)
    except (PackError, OSError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
