"""Configs that must stay in step across the CT segmentation bundles (BTCV and MSD lung) do, key by key.

Each bundle is self-contained (it is packed and downloaded alone), so the two copies cannot include one another; this
test is what notices when one is edited and the other is not. A difference outside ``EXPECTED`` fails with its ids.
"""

from __future__ import annotations

import filecmp
import json
import os

import pytest
from conftest import BUNDLES

#: the ids whose values legitimately differ between t3d_btcv_seg and t3d_msd_lung, per config file
EXPECTED: dict[str, set[str]] = {
    "train.json": {
        "dataset_dir", "datalist", "intensity_window#0", "intensity_window#1", "max_epochs", "num_classes",
        "train#random_transforms#1#pos",
    },
    "evaluate.json": set(),
    "inference.json": {"dataset_dir", "intensity_window#0", "intensity_window#1", "num_classes"},
    "multi_gpu_train.json": set(),
    "multi_gpu_evaluate.json": set(),
    "cpu_toy.json": {"dataset_dir", "prepare_data#miniature#_target_", "pixdim#2"},
}  # fmt: skip


def _leaves(config: object, prefix: str = "") -> dict[str, object]:
    if isinstance(config, dict):
        items = config.items()
    elif isinstance(config, list):
        items = ((str(i), v) for i, v in enumerate(config))
    else:
        return {prefix: config}
    leaves: dict[str, object] = {}
    for key, value in items:
        leaves.update(_leaves(value, f"{prefix}#{key}" if prefix else str(key)))
    return leaves


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_btcv_and_lung_configs_differ_only_where_expected(name):
    configs = []
    for bundle in ("t3d_btcv_seg", "t3d_msd_lung"):
        with open(os.path.join(BUNDLES, bundle, "configs", name), encoding="utf-8") as f:
            configs.append(_leaves(json.load(f)))
    btcv, lung = configs
    differing = {key for key in set(btcv) | set(lung) if btcv.get(key, "<missing>") != lung.get(key, "<missing>")}
    assert differing == EXPECTED[name], (
        f"{name}: ids that now differ between t3d_btcv_seg and t3d_msd_lung: {sorted(differing - EXPECTED[name])}; "
        f"ids expected to differ that no longer do: {sorted(EXPECTED[name] - differing)}"
    )


def test_logging_conf_is_the_same_file_in_every_bundle():
    files = [os.path.join(BUNDLES, b, "configs", "logging.conf") for b in sorted(os.listdir(BUNDLES))]
    assert all(filecmp.cmp(files[0], other, shallow=False) for other in files[1:])
