"""Names and versions as MONAI parses them out of file names, and the files that publish a release.

MONAI parses names and versions out of file names: ``re.split(r"_v\\d*.", asset)[0]`` is taken as the name (so a
name may not contain ``_v``) and versions are compared as *strings* (``sorted``), so ``0.10.0`` sorts before
``0.9.0``; both are refused here rather than published and silently mis-resolved.

A pack adds ``<name>_v<version>: {checksum: sha1, source: URL}`` to a ``model_info.json`` in the form MONAI's
GitHub source reads (``models/model_info.json`` of a model-zoo style repository), with the release-asset URL
``https://github.com/<repo>/releases/download/hosting_storage_v1/<name>_v<version>.zip``. Weights above the inline
limit are named by a ``large_files.yml`` (their URL and sha256), which ``python -m monai.bundle download_large_files``
reads.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable

from t3d_tools.packaging.errors import PackError

__all__ = [
    "DEFAULT_RELEASE_TAG",
    "check_name_and_version",
    "check_version_order",
    "known_versions",
    "update_model_info",
]

DEFAULT_RELEASE_TAG = "hosting_storage_v1"
_MONAI_NAME_SPLIT = re.compile(r"_v\d*.")  # monai.bundle.scripts._get_all_bundles_info


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
