"""Toy-trained, packed bundles shared by the packaging, export and MONAI Label tests (once per test session).

A toy training is the bundle's ``train.json`` + ``cpu_toy.json`` for 2 iterations and one validation (which saves
``models/model.pt``); the pack merges ``cpu_toy.json`` into the packed ``inference.json`` so the zip serves that
small network, exactly as ``python -m t3d_tools.packaging <bundle> --overlay cpu_toy.json --weights ...`` does.
Such a zip is a toy build: bundle ``<bundle>_toy`` (:func:`toy_name`), version ``<version>-toy``.
"""

from __future__ import annotations

import json
import os

from conftest import run_bundle

_TRAINED: dict[str, str] = {}  # bundle -> root of its toy run (models/model.pt, data/<miniature>/)
_PACKED: dict[str, str] = {}


def bundle_metadata(bundle: str) -> dict:
    """The committed ``configs/metadata.json`` of ``bundles/<bundle>``."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(repo, "bundles", bundle, "configs", "metadata.json")) as f:
        return json.load(f)


def toy_weights(bundle: str, tmp_path_factory) -> str:
    """``models/model.pt`` of a 2-iteration CPU-toy training of ``bundles/<bundle>``."""
    if bundle not in _TRAINED:
        root = tmp_path_factory.mktemp(f"{bundle}_toy")
        run_bundle(
            bundle,
            ["train.json", "cpu_toy.json"],
            str(root),
            max_epochs=1,
            val_interval=1,
            num_workers=0,
            **{"train#trainer#epoch_length": 2},
        )
        _TRAINED[bundle] = str(root)
    return os.path.join(_TRAINED[bundle], "models", "model.pt")


def toy_validation_rows(bundle: str, datalist_name: str, tmp_path_factory) -> list[dict]:
    """Validation rows (image, label) of the synthetic miniature the toy training of ``bundle`` wrote."""
    import glob

    from custom.data.seg_datasets.common import load_split

    root = os.path.dirname(os.path.dirname(toy_weights(bundle, tmp_path_factory)))
    (datalist,) = glob.glob(os.path.join(root, "data", "*", datalist_name))
    return load_split(datalist, "validation")


def toy_name(bundle: str) -> str:
    """The bundle name of a toy build of ``bundle`` (its zip's top folder, MONAI Label's model name)."""
    from t3d_tools.packaging.pack import TOY_NAME_SUFFIX

    return bundle + TOY_NAME_SUFFIX


def toy_pack(bundle: str, tmp_path_factory) -> str:
    """``<name>_toy_v<version>-toy.zip`` of the toy-trained bundle, its inference.json at the CPU-toy network."""
    from t3d_tools.packaging.pack import pack

    if bundle not in _PACKED:
        dist = tmp_path_factory.mktemp("dist")
        _PACKED[bundle] = pack(
            bundle,
            str(dist),
            weights=toy_weights(bundle, tmp_path_factory),
            overlays=["cpu_toy.json"],
            repo="example/t3d",
        )
    assert os.path.isfile(_PACKED[bundle])
    return _PACKED[bundle]
