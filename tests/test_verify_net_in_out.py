"""Every bundle passes MONAI's ``verify_net_in_out`` with MONAI's default arguments, as the model zoo's CI runs it:

    cd bundles/<name> && python -m monai.bundle verify_net_in_out --net_id network_def \\
        --meta_file configs/metadata.json --config_file configs/inference.json

(n = p = any = 1, the paper-size network of ``inference.json``, no overrides). In this process, not one subprocess
per bundle: importing monai costs ~10 s here. The SwinUNETR bundles state ``"32*(n+1)"``: divisible by 32 (five
stride-2 stages) and at least 64 (instance norm needs more than one bottleneck voxel), so n = 1 runs 64^3.
"""

from __future__ import annotations

import json
import os

import pytest
from conftest import BUNDLES

# bundle -> the patch / window size its inference.json feeds the network (must fit the metadata's shape pattern)
FED_SHAPE_KEY = {
    "t3d_pretrain": "crop_size",
    "t3d_btcv_seg": "roi_size",
    "t3d_msd_lung": "roi_size",
    "t3d_brats": "roi_size",
    "t3d_bimcv_cls": "roi_size",
}


def test_every_bundle_is_covered():
    metadata = {name: os.path.join(BUNDLES, name, "configs", "metadata.json") for name in os.listdir(BUNDLES)}
    bundles = [name for name, path in metadata.items() if os.path.isfile(path)]
    assert sorted(FED_SHAPE_KEY) == sorted(bundles)


@pytest.mark.parametrize("bundle", sorted(FED_SHAPE_KEY))
def test_verify_net_in_out_with_default_arguments(bundle, monkeypatch):
    from monai.bundle import verify_net_in_out

    monkeypatch.chdir(os.path.join(BUNDLES, bundle))
    verify_net_in_out(net_id="network_def", meta_file="configs/metadata.json", config_file="configs/inference.json")


@pytest.mark.parametrize("bundle", sorted(FED_SHAPE_KEY))
def test_metadata_shape_admits_what_inference_feeds(bundle):
    """The stated shape pattern includes the patch / window size ``inference.json`` uses, for some n in 1..8."""
    from monai.bundle.scripts import _get_fake_spatial_shape  # what verify_net_in_out evaluates the pattern with

    configs = os.path.join(BUNDLES, bundle, "configs")
    with open(os.path.join(configs, "metadata.json")) as f:
        pattern = json.load(f)["network_data_format"]["inputs"]["image"]["spatial_shape"]
    with open(os.path.join(configs, "inference.json")) as f:
        fed = tuple(json.load(f)[FED_SHAPE_KEY[bundle]])
    admitted = {_get_fake_spatial_shape(pattern, n=n, p=n) for n in range(1, 9)}
    assert fed in admitted, (bundle, pattern, fed)
