"""Pack a bundle into ``dist/<name>_v<version>.zip``, the archive ``python -m monai.bundle download`` unpacks.

The zip holds one folder, ``<name>/``: the bundle's ``configs/``, ``docs/``, ``LICENSE``, the trained weights
``models/model.pt`` (or, above ``max_inline_mb``, a ``large_files.yml`` naming their URL and sha256, which
``python -m monai.bundle download_large_files`` reads; ``pyyaml`` is then added to the packed metadata) with the
``*.json`` files written beside them (class names, thresholds), and this repository's ``custom/`` package, the
bundles' runtime code, vendored whole as ``<name>/custom/`` (its modules and its package data, the zero-shot prompt
sets ``custom/data/prompts/*.json``) so the unzipped bundle runs from its own folder in an environment that has only
the packages its ``metadata.json`` names (torch, monai, numpy and ``required_packages_version``). Repository tooling
(BIMCV curation, the paper-table experiments, packaging, serving) lives in ``t3d_tools/`` and never ships. Every
module of ``custom/`` the packed bundle's configs reach (any ``_target_`` or ``$`` expression, through Python
imports) must import only third-party packages the metadata names: another one stops the pack with an error naming
both.

Before anything is written, the packed ``inference.json``'s ``network_def`` (with the overlays being packed) is
instantiated and the weights are loaded into it strictly: weights trained with another network (the CPU toy's
BasicUNet under the paper's SwinUNETR config) are refused with one line naming the weights, the config and the first
mismatched keys, instead of failing on the user's side. Weights that fit only with a CPU-toy overlay
(``--overlay cpu_toy.json``) make a *toy build*: bundle name ``<name>_toy``, version ``<version>-toy``, metadata name,
description and intended use saying so, and a model card that starts with the banner "Weights trained on synthetic
data by the CPU toy; not a research or clinical model." Download by the real name never finds a toy build, and a toy
build never carries the real name. The committed card's "no trained weights are published" note (between
``<!-- weights-status:begin ... -->`` and ``<!-- weights-status:end -->``) is dropped from every packed card.

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
    # a toy build's "0.2.0-toy" compares by its number (toy builds have their own name, so only toys compete)
    numeric_latest = max(versions, key=lambda v: tuple(int(p) for p in v.split("-")[0].split(".")))
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


def _overlay_path(bundle_dir: str, overlay: str) -> str:
    path = os.path.join(bundle_dir, "configs", os.path.basename(overlay))
    if not os.path.isfile(path):
        raise PackError(
            f"--overlay {overlay}: expected a config file in {os.path.join(bundle_dir, 'configs')}, found none"
        )
    return path


def merged_inference(bundle_dir: str, overlays: list[str]) -> dict:
    """``configs/inference.json`` with the values of ``overlays`` (file names in configs/) for the ids it already has;
    ids the inference config does not use (a training datalist, epochs) are left out."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(os.path.join(bundle_dir, "configs", "inference.json"))
    for overlay in overlays:
        with open(_overlay_path(bundle_dir, overlay), encoding="utf-8") as f:
            values = json.load(f)
        for key, value in values.items():
            if key in parser:
                parser[key] = value
    return {k: v for k, v in parser.get().items() if k != "_meta_"}


def merged_inference_config(bundle_dir: str, overlays: list[str]) -> str:
    """:func:`merged_inference` as the JSON text that is packed as ``configs/inference.json``."""
    return json.dumps(merged_inference(bundle_dir, overlays), indent=4) + "\n"


def check_weights(name: str, weights: str) -> None:
    """The weights must load as tensors only (``weights_only=True``): what MONAI's loaders and MONAI Label read."""
    from custom.weights.checkpoint import CheckpointLoadError, load_weights_only

    try:
        load_weights_only(weights)
    except CheckpointLoadError as err:  # torch's real reason (e.g. the refused global), never its retry advice
        raise PackError(f"{name}: {weights} does not load as a weights-only checkpoint ({err.reason})") from None


def _checkpoint_loaders(value: object) -> list[dict]:
    """Every ``CheckpointLoader`` component of a config, at any depth."""
    if isinstance(value, dict):
        found = [value] if str(value.get("_target_", "")).split(".")[-1] == "CheckpointLoader" else []
        return found + [c for item in value.values() for c in _checkpoint_loaders(item)]
    if isinstance(value, list):
        return [c for item in value for c in _checkpoint_loaders(item)]
    return []


def _first(keys: list[str], count: int = 3) -> str:
    shown = ", ".join(keys[:count])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > count else shown


def check_network_fits_weights(name: str, bundle_dir: str, weights: str, overlays: list[str]) -> str:
    """Instantiate the packed ``inference.json``'s ``network_def`` (``overlays`` merged, as they will be packed) and
    load the weights into it with ``load_state_dict(strict=True)``; refuse a mismatch with one line naming the weights
    file, the config and the first missing / unexpected / differently shaped keys. Returns the network's class name.

    The state dict is taken the way the config's ``CheckpointLoader`` takes it (its one ``load_dict`` key, e.g.
    ``{"model": state_dict}``, or the bare state dict). A loader with ``strict: false`` (``t3d_pretrain``: the full
    T3D checkpoint feeds the image-only embedder) makes the checkpoint's extra keys expected; the network's own keys
    must all be there with their shapes, since MONAI's non-strict loader silently skips the others."""
    import torch
    from monai.bundle import ConfigParser

    from custom.weights.checkpoint import load_weights_only

    config_label = " + ".join(["configs/inference.json", *[os.path.basename(o) for o in overlays]])
    config = merged_inference(bundle_dir, overlays)
    if "network_def" not in config:
        raise PackError(f"{name}: expected a 'network_def' in {config_label}, found keys {sorted(config)}")
    # the bundle as it will be unpacked: its own configs, the weights' folder as models/ (class names, thresholds)
    config.update(bundle_root=bundle_dir, ckpt_dir=os.path.dirname(os.path.abspath(weights)))
    if "device" in config:
        config["device"] = "$torch.device('cpu')"
    parser = ConfigParser(config)
    try:
        network = parser.get_parsed_content("network_def")
    except Exception as err:  # noqa: BLE001 - whatever the config raises, one line naming it
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PackError(f"{name}: network_def of {config_label} does not instantiate ({reason})") from None
    target = type(network).__name__

    loaders = _checkpoint_loaders(config)
    loader = loaders[0] if loaders else {}
    load_keys = list((loader.get("load_dict") or {"model": None}).keys())
    strict = loader.get("strict", True) is not False
    state = load_weights_only(weights)
    if isinstance(state, dict) and len(load_keys) == 1 and isinstance(state.get(load_keys[0]), dict):
        state = state[load_keys[0]]  # MONAI's CheckpointLoader: {"model": state_dict} or the state dict itself
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PackError(
            f"{name}: {weights} does not fit {config_label} network_def ({target}): expected a state "
            f"dict of tensors, found {type(state).__name__}"
        )
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected] if strict else []
    shapes = [
        f"{k} {list(state[k].shape)} vs {list(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or shapes):
        try:
            network.load_state_dict({k: state[k] for k in expected} if not strict else state, strict=True)
        except RuntimeError as err:
            shapes = [str(err).strip().splitlines()[-1].strip()]
    if missing or unexpected or shapes:
        parts = [
            f"{len(missing)} missing key(s): {_first(missing)}" if missing else "",
            f"{len(unexpected)} unexpected key(s): {_first(unexpected)}" if unexpected else "",
            f"{len(shapes)} shape mismatch(es) (checkpoint vs network): {_first(shapes, 2)}" if shapes else "",
        ]
        toys = sorted(f for f in os.listdir(os.path.join(bundle_dir, "configs")) if toy_overlays([f]))
        hint = (
            (
                "pack with the overlays the weights were trained with"
                + (f" (CPU toy weights: --overlay {toys[0]})" if toys else " (--overlay NAME.json)")
            )
            if not overlays
            else "pack with exactly the overlays the weights were trained with (none for paper-size weights)"
        )
        raise PackError(
            f"{name}: {weights} does not fit {config_label} network_def ({target}): "
            + "; ".join(p for p in parts if p)
            + f"; {hint}"
        )
    return target


def toy_overlays(overlays: Iterable[str]) -> list[str]:
    """The CPU-toy overlays among ``overlays`` (``cpu_toy.json``, ``cpu_toy_swin.json``: names starting
    ``cpu_toy``): weights that fit the network only with one of them were trained by the toy."""
    return [o for o in overlays if os.path.basename(o).startswith("cpu_toy")]


TOY_NAME_SUFFIX = "_toy"  # bundle name t3d_btcv_seg -> t3d_btcv_seg_toy: download by the real name never gets a toy
TOY_VERSION_SUFFIX = "-toy"  # version 0.2.0 -> 0.2.0-toy (a pre-release in SemVer terms: never above 0.2.0)
TOY_BANNER = "Weights trained on synthetic data by the CPU toy; not a research or clinical model."
WEIGHTS_NOTE_BEGIN = "<!-- weights-status:begin"
WEIGHTS_NOTE_END = "<!-- weights-status:end -->"


def toy_metadata(metadata: dict, version: str, overlays: list[str]) -> dict:
    """``metadata.json`` of a toy build: version ``<version>-toy``, name, description and intended use saying so."""
    meta = dict(metadata)
    toy_version = version + TOY_VERSION_SUFFIX
    used = ", ".join(f"configs/{os.path.basename(o)}" for o in overlays)
    meta["version"] = toy_version
    meta["changelog"] = {
        toy_version: f"CPU toy build of {version} (network and data of {used}); for tests and demonstrations only",
        **metadata.get("changelog", {}),
    }
    meta["name"] = f"{metadata.get('name', '')} [CPU TOY]".strip()
    meta["description"] = (
        f"CPU TOY BUILD: {TOY_BANNER} The network is the small one of {used}, trained on the "
        f"project's synthetic data. {metadata.get('description', '')}"
    ).strip()
    meta["intended_use"] = f"Tests and demonstrations of the bundle's plumbing only. {TOY_BANNER}"
    return meta


def packed_model_card(card: str, toy: bool, name: str, overlays: list[str]) -> str:
    """The model card as packed: the committed card's "no trained weights are published" note (between the
    ``weights-status`` markers) is dropped, since the zip carries weights; a toy build starts with the toy banner."""
    if WEIGHTS_NOTE_BEGIN in card and WEIGHTS_NOTE_END in card:
        head, rest = card.split(WEIGHTS_NOTE_BEGIN, 1)
        card = head + rest.split(WEIGHTS_NOTE_END, 1)[1].lstrip("\n")
    if not toy:
        return card
    used = " + ".join(os.path.basename(o) for o in overlays)
    banner = (
        f"> **{TOY_BANNER}**\n>\n> Toy build `{name}{TOY_NAME_SUFFIX}`: the network of `configs/inference.json` "
        f"merged with `{used}`, trained by the CPU toy on the project's synthetic data. It shows that the "
        "bundle runs end to end; its outputs mean nothing clinically.\n\n"
    )
    return banner + card


def resolve_bundle(bundle: str) -> str:
    """A bundle folder, given as a path or as a name under ``bundles/``."""
    for candidate in (bundle, os.path.join(REPO_ROOT, "bundles", bundle)):
        if os.path.isfile(os.path.join(candidate, "configs", "metadata.json")):
            return os.path.abspath(candidate)
    raise PackError(f"{bundle}: no bundle there (expected configs/metadata.json, also looked under bundles/)")


def _packed_names(name: str, version: str, toy: bool) -> tuple[str, str]:
    """(bundle name, version) of the zip: ``<name>_toy`` / ``<version>-toy`` for a toy build; both must come back
    unchanged from MONAI's parsing of ``<name>_v<version>.zip`` (``re.split(r"_v\\d*.", asset)[0]`` for the name, the
    rest after ``<name>_v`` for the version)."""
    packed = (name + TOY_NAME_SUFFIX, version + TOY_VERSION_SUFFIX) if toy else (name, version)
    asset = f"{packed[0]}_v{packed[1]}.zip"
    parsed = (_MONAI_NAME_SPLIT.split(asset)[0], asset.split(f"{packed[0]}_v")[-1].replace(".zip", ""))
    if parsed != packed:
        raise PackError(f"{name}: MONAI would read the asset {asset} as name {parsed[0]!r} version {parsed[1]!r}")
    return packed


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
    ``["cpu_toy.json"]``) are merged into the packed ``inference.json`` (the configs the weights were trained with);
    a CPU-toy overlay makes a toy build, ``<dist_dir>/<name>_toy_v<version>-toy.zip``."""
    overlays = list(overlays or [])
    bundle_dir = resolve_bundle(bundle)
    name = os.path.basename(bundle_dir.rstrip(os.sep))
    with open(os.path.join(bundle_dir, "configs", "metadata.json"), encoding="utf-8") as f:
        metadata = json.load(f)
    version = str(metadata.get("version", ""))
    check_name_and_version(name, version)
    for overlay in overlays:
        _overlay_path(bundle_dir, overlay)
    toy = toy_overlays(overlays)
    packed_name, packed_version = _packed_names(name, version, bool(toy))
    model_info = model_info or os.path.join(dist_dir, "model_info.json")
    check_version_order(packed_name, packed_version, known_versions(model_info, packed_name))

    weights = weights or os.path.join(bundle_dir, "models", "model.pt")
    if not os.path.isfile(weights):
        raise PackError(f"{name}: no trained weights at {weights} (train the bundle or pass --weights PATH)")
    check_weights(name, weights)
    config_dir = os.path.join(bundle_dir, "configs")
    used_modules, third_party = vendored_modules(config_dir)
    check_third_party(name, metadata, third_party)
    network = check_network_fits_weights(name, bundle_dir, weights, overlays)

    packed_metadata = toy_metadata(metadata, version, toy) if toy else dict(metadata)
    large_files = None
    if os.path.getsize(weights) > max_inline_mb * 2**20:
        if not weights_url:
            raise PackError(
                f"{name}: weights are {os.path.getsize(weights) / 2**20:.0f} MB (> --max_inline_mb {max_inline_mb:g}); "
                "pass --weights_url where they will be hosted (large_files.yml)"
            )
        large_files = _large_files_yml("models/model.pt", weights_url, file_digest(weights, "sha256"))
        try:  # monai.bundle download_large_files reads large_files.yml with PyYAML
            yaml_version = importlib.metadata.version("PyYAML")
        except importlib.metadata.PackageNotFoundError:
            raise PackError(
                f"{name}: large_files.yml needs pyyaml named in metadata.json, but PyYAML is not "
                "installed here to take its version from"
            ) from None
        packed_metadata["required_packages_version"] = {
            **metadata.get("required_packages_version", {}),
            "pyyaml": yaml_version,
        }

    generated = {}
    if packed_metadata != metadata:  # a toy build, or pyyaml added for large_files.yml
        generated[os.path.join("configs", "metadata.json")] = json.dumps(packed_metadata, indent=4) + "\n"
    if overlays:
        generated[os.path.join("configs", "inference.json")] = merged_inference_config(bundle_dir, overlays)
    card_path = os.path.join(bundle_dir, "docs", "README.md")
    if os.path.isfile(card_path):
        with open(card_path, encoding="utf-8") as f:
            generated[os.path.join("docs", "README.md")] = packed_model_card(f.read(), bool(toy), name, toy)
    entries = [(src, rel) for src, rel in _bundle_files(bundle_dir) if rel not in generated]
    entries += runtime_files()
    if not large_files:
        entries.append((weights, os.path.join("models", "model.pt")))
    # data-derived model files written beside the weights (class names, decision thresholds) ship with them
    weights_dir = os.path.dirname(os.path.abspath(weights))
    entries += [
        (os.path.join(weights_dir, f), os.path.join("models", f))
        for f in sorted(os.listdir(weights_dir))
        if f.endswith(".json")
    ]
    if large_files:
        generated["large_files.yml"] = large_files

    os.makedirs(dist_dir, exist_ok=True)
    key = f"{packed_name}_v{packed_version}"
    zip_path = os.path.join(dist_dir, f"{key}.zip")
    fd, tmp_path = tempfile.mkstemp(dir=dist_dir, suffix=".zip.part")
    os.close(fd)
    try:
        members = [(rel, source, None) for source, rel in entries]
        members += [(rel, None, text) for rel, text in generated.items()]
        with zipfile.ZipFile(tmp_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for rel, source, text in sorted(members, key=lambda m: m[0]):
                info = zipfile.ZipInfo(f"{packed_name}/{rel}".replace(os.sep, "/"), date_time=_ZIP_DATE)
                info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
                if text is not None:
                    archive.writestr(info, text)
                    continue
                with open(source, "rb") as src, archive.open(info, "w") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(tmp_path, zip_path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
    source_url = f"https://github.com/{repo}/releases/download/{DEFAULT_RELEASE_TAG}/{key}.zip"
    update_model_info(model_info, key, file_digest(zip_path, "sha1"), source_url)
    size_mb = os.path.getsize(zip_path) / 2**20
    kind = f"CPU TOY build ({' + '.join(toy)})" if toy else "release"
    print(
        f"packed {zip_path} ({kind}; {size_mb:.1f} MB; weights fit {network} of configs/inference.json"
        f"{''.join(' + ' + os.path.basename(o) for o in overlays)}; custom/ vendored whole, "
        f"{len(used_modules)} modules used; "
        f"weights {'in large_files.yml' if large_files else 'inside'}); {model_info}: {key}"
    )
    return zip_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m t3d_tools.packaging", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", help="bundle name under bundles/ or a bundle folder")
    parser.add_argument("--dist", default="dist", help="output folder (default: dist)")
    parser.add_argument("--weights", help="trained weights to ship as models/model.pt (default: the bundle's own)")
    parser.add_argument("--max_inline_mb", type=float, default=100.0, help="larger weights go to large_files.yml")
    parser.add_argument("--weights_url", help="where weights larger than --max_inline_mb will be downloaded from")
    parser.add_argument(
        "--repo", default="OWNER/REPO", help="GitHub owner/repo whose hosting_storage_v1 release hosts the zip"
    )
    parser.add_argument("--model_info", help="model_info.json to update (default: <dist>/model_info.json)")
    parser.add_argument(
        "--overlay",
        action="append",
        default=[],
        help="bundle config merged into the packed inference.json (e.g. cpu_toy.json); repeatable",
    )
    parser.add_argument(
        "--print_requirements",
        action="store_true",
        help="print the pip requirements the bundle's metadata names, and exit",
    )
    args = parser.parse_args(argv)
    try:
        if args.print_requirements:
            with open(os.path.join(resolve_bundle(args.bundle), "configs", "metadata.json"), encoding="utf-8") as f:
                print("\n".join(bundle_requirements(json.load(f))))
            return 0
        pack(
            args.bundle,
            args.dist,
            args.weights,
            args.max_inline_mb,
            args.weights_url,
            args.repo,
            args.model_info,
            args.overlay,
        )
    except (PackError, OSError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
