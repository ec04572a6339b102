"""Pack a bundle into ``dist/<name>_v<version>.zip``, the archive ``python -m monai.bundle download`` unpacks.

The zip holds one folder, ``<name>/``: the bundle's ``configs/``, ``docs/``, ``LICENSE``, the trained weights
``models/model.pt`` (or, above ``max_inline_mb``, a ``large_files.yml`` naming their URL and sha256, which
``python -m monai.bundle download_large_files`` reads; ``pyyaml`` is then added to the packed metadata) with the
model files the configs write beside them (:data:`MODEL_SIDE_FILES`: class names, thresholds), and this repository's
``custom/`` package, the
bundles' runtime code, vendored whole as ``<name>/custom/``. Repository tooling (BIMCV curation, the paper-table
experiments, packaging, serving) lives in ``t3d_tools/`` and never ships. The zip's bytes depend only on its inputs
(sorted members, fixed timestamps), and its ``<name>_v<version>`` key, sha1 and release-asset URL are added to a
``model_info.json``.

What ships is an allow-list: from the bundle folder only the files the MONAI bundle format names
(:data:`BUNDLE_FORMAT_FILES`), from beside the weights only :data:`MODEL_SIDE_FILES`, plus each ``--include FILE``
given explicitly. Anything else lying there (a ``credentials.json`` next to the weights, notes, data) is left out and
listed in the output.

Its parts live in modules of their own (every check runs before anything is written):

- ``release_names``: names and versions MONAI would mis-parse or mis-order, ``model_info.json``, ``large_files.yml``;
- ``vendoring``: the modules of ``custom/`` the configs reach must import only packages ``metadata.json`` names;
- ``weights_check``: the weights load weights-only and fit the packed ``network_def`` strictly;
- ``toy_builds``: weights that fit only with a CPU-toy overlay make a toy build, ``<name>_toy`` / ``<version>-toy``,
  and every packed model card drops the committed "no trained weights are published" note.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile

from t3d_tools.packaging.errors import PackError, one_line_os_error
from t3d_tools.packaging.release_names import (
    DEFAULT_RELEASE_TAG,
    _large_files_yml,
    check_name_and_version,
    check_version_order,
    known_versions,
    update_model_info,
)
from t3d_tools.packaging.toy_builds import (
    TOY_BANNER,
    TOY_NAME_SUFFIX,
    TOY_VERSION_SUFFIX,
    WEIGHTS_NOTE_BEGIN,
    WEIGHTS_NOTE_END,
    _packed_names,
    packed_model_card,
    toy_metadata,
    toy_overlays,
)
from t3d_tools.packaging.vendoring import (
    CUSTOM_DIR,
    REPO_ROOT,
    bundle_requirements,
    check_third_party,
    config_module_names,
    module_closure,
    runtime_files,
    vendored_modules,
)
from t3d_tools.packaging.weights_check import (
    _overlay_path,
    check_network_fits_weights,
    check_weights,
    merged_inference,
    merged_inference_config,
)

__all__ = [
    # this module: the pack itself and its CLI
    "PackError",
    "pack",
    "main",
    "resolve_bundle",
    "file_digest",
    # re-exported from release_names
    "DEFAULT_RELEASE_TAG",
    "check_name_and_version",
    "check_version_order",
    "known_versions",
    "update_model_info",
    # re-exported from vendoring
    "REPO_ROOT",
    "CUSTOM_DIR",
    "bundle_requirements",
    "config_module_names",
    "module_closure",
    "vendored_modules",
    "runtime_files",
    "check_third_party",
    # re-exported from weights_check
    "merged_inference",
    "merged_inference_config",
    "check_weights",
    "check_network_fits_weights",
    # re-exported from toy_builds
    "TOY_NAME_SUFFIX",
    "TOY_VERSION_SUFFIX",
    "TOY_BANNER",
    "WEIGHTS_NOTE_BEGIN",
    "WEIGHTS_NOTE_END",
    "toy_overlays",
    "toy_metadata",
    "packed_model_card",
]

# run outputs that never ship (they are git-ignored in the repository as well)
_SKIPPED_DIRS = {"data", "eval", "runs", "models", "__pycache__", ".pytest_cache", "custom"}
#: the files of a bundle folder the MONAI bundle format names (fnmatch patterns; ``*`` spans folders)
BUNDLE_FORMAT_FILES = (
    "LICENSE",
    "configs/*.json",
    "configs/*.yaml",
    "configs/*.yml",
    "configs/*.conf",
    "docs/*.md",
    "docs/*.txt",
    "docs/*.png",
    "docs/*.jpg",
    "docs/*.svg",
    "scripts/*.py",
)
#: model files the bundles' configs write beside ``models/model.pt`` (read by inference / MONAI Label)
MODEL_SIDE_FILES = ("class_names.json", "thresholds.json")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same inputs give the same bytes and checksum


def file_digest(path: str, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _in_bundle_format(rel: str) -> bool:
    return any(fnmatch.fnmatchcase(rel.replace(os.sep, "/"), pattern) for pattern in BUNDLE_FORMAT_FILES)


def _bundle_files(bundle_dir: str, left_out: list[str] | None = None) -> list[tuple[str, str]]:
    """(source path, path inside the bundle) of every file of the bundle folder the bundle format names
    (:data:`BUNDLE_FORMAT_FILES`), symlinks refused; the others go to ``left_out``."""
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
            rel = os.path.normpath(os.path.join(rel_root, file_name))
            if _in_bundle_format(rel):
                files.append((source, rel))
            elif left_out is not None:
                left_out.append(source)
    return files


def _included(bundle_dir: str, include: list[str]) -> list[tuple[str, str]]:
    """``--include`` files: one inside the bundle folder keeps its path there, any other goes to ``models/``."""
    entries = []
    for path in include:
        if not os.path.isfile(path) or os.path.islink(path):
            raise PackError(
                f"--include {path}: expected a regular file, found {'a link' if os.path.islink(path) else 'none'}"
            )
        source = os.path.abspath(path)
        inside = os.path.commonpath([bundle_dir, source]) == bundle_dir
        entries.append(
            (
                source,
                os.path.relpath(source, bundle_dir) if inside else os.path.join("models", os.path.basename(source)),
            )
        )
    return entries


def _write_zip(tmp_path: str, packed_name: str, entries: list, generated: dict) -> None:
    """Write the members (sorted, fixed timestamps) to ``tmp_path`` (renamed into place by the caller: an earlier zip
    of that name stays whole until the new one is complete). A write failure (disk full, ``ulimit -f``) is a
    :class:`PackError` naming the file."""
    members = [(rel, source, None) for source, rel in entries]
    members += [(rel, None, text) for rel, text in generated.items()]
    try:
        with zipfile.ZipFile(tmp_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for rel, source, text in sorted(members, key=lambda m: m[0]):
                info = zipfile.ZipInfo(f"{packed_name}/{rel}".replace(os.sep, "/"), date_time=_ZIP_DATE)
                info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
                if text is not None:
                    archive.writestr(info, text)
                    continue
                with open(source, "rb") as src, archive.open(info, "w") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except OSError as err:
        if err.filename and err.filename != tmp_path:  # a source file: named by the error itself
            raise
        raise PackError(f"{tmp_path}: expected to write the bundle zip, found {err.strerror or err}") from None


def _move_aside_if_different(zip_path: str, new_zip: str) -> str | None:
    """An earlier ``zip_path`` with other bytes than ``new_zip`` is moved to ``<dist>/.previous/<name>-<UTC
    time>.zip`` (returned), never overwritten: it may be the only copy of a release. Same bytes: nothing to keep."""
    if not os.path.isfile(zip_path) or file_digest(zip_path, "sha1") == file_digest(new_zip, "sha1"):
        return None
    folder = os.path.join(os.path.dirname(zip_path), ".previous")
    os.makedirs(folder, exist_ok=True)
    stem = os.path.basename(zip_path)[: -len(".zip")]
    base = os.path.join(folder, f"{stem}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    aside, count = f"{base}.zip", 1
    while os.path.lexists(aside):
        count += 1
        aside = f"{base}-{count}.zip"
    os.rename(zip_path, aside)
    return aside


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
    include: list[str] | None = None,
) -> str:
    """Build ``<dist_dir>/<name>_v<version>.zip``; returns its path. See the module docstring. ``overlays`` (e.g.
    ``["cpu_toy.json"]``) are merged into the packed ``inference.json`` (the configs the weights were trained with);
    a CPU-toy overlay makes a toy build, ``<dist_dir>/<name>_toy_v<version>-toy.zip``. ``include`` lists files
    to ship besides the allow-list (see the module docstring)."""
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

    packed_metadata = toy_metadata(metadata, version, toy, network) if toy else dict(metadata)
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
    left_out: list[str] = []
    entries = [(src, rel) for src, rel in _bundle_files(bundle_dir, left_out) if rel not in generated]
    entries += runtime_files()
    if not large_files:
        entries.append((weights, os.path.join("models", "model.pt")))
    # the data-derived model files the configs write beside the weights (class names, thresholds) ship with them;
    # nothing else lying there does (a credentials.json next to --weights dir/model.pt)
    weights_dir = os.path.dirname(os.path.abspath(weights))
    for file_name in sorted(os.listdir(weights_dir)):
        source = os.path.join(weights_dir, file_name)
        if file_name in MODEL_SIDE_FILES and os.path.isfile(source):
            entries.append((source, os.path.join("models", file_name)))
        elif source != os.path.abspath(weights) and os.path.isfile(source) and not file_name.startswith("."):
            left_out.append(source)
    included = _included(bundle_dir, list(include or []))
    taken = {rel for _, rel in entries} | set(generated)
    for source, rel in included:
        if rel in taken:
            raise PackError(f"--include {source}: expected a file the pack does not already ship, found {rel} twice")
    entries += included
    left_out = sorted(set(left_out) - {source for source, _ in included})
    if large_files:
        generated["large_files.yml"] = large_files

    os.makedirs(dist_dir, exist_ok=True)
    key = f"{packed_name}_v{packed_version}"
    zip_path = os.path.join(dist_dir, f"{key}.zip")
    fd, tmp_path = tempfile.mkstemp(dir=dist_dir, suffix=".zip.part")
    os.close(fd)
    try:
        _write_zip(tmp_path, packed_name, entries, generated)
        aside = _move_aside_if_different(zip_path, tmp_path)
        os.replace(tmp_path, zip_path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
    if aside:
        print(f"moved the earlier {zip_path} (other content) to {aside}")
    source_url = f"https://github.com/{repo}/releases/download/{DEFAULT_RELEASE_TAG}/{key}.zip"
    update_model_info(model_info, key, file_digest(zip_path, "sha1"), source_url)
    size_mb = os.path.getsize(zip_path) / 2**20
    kind = f"CPU TOY build ({' + '.join(toy)})" if toy else "release"
    print(
        f"packed {zip_path} ({kind}; {size_mb:.1f} MB; weights fit {type(network).__name__} of configs/inference.json"
        f"{''.join(' + ' + os.path.basename(o) for o in overlays)}; custom/ vendored whole, "
        f"{len(used_modules)} modules used; "
        f"weights {'in large_files.yml' if large_files else 'inside'}); {model_info}: {key}"
    )
    if left_out:
        shown = ", ".join(left_out[:3]) + (f" and {len(left_out) - 3} more" if len(left_out) > 3 else "")
        print(f"left out (not in the bundle format; --include FILE to ship one): {shown}")
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
        "--include",
        action="append",
        default=[],
        help="a file to ship besides the bundle-format allow-list (inside the bundle: its path; else models/); "
        "repeatable",
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
            args.include,
        )
    except (PackError, OSError, json.JSONDecodeError) as err:
        print(f"error: {one_line_os_error(err)}", file=sys.stderr)
        return 2
    return 0
