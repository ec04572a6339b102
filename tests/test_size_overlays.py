"""What users run is what learns: the CPU-size overlays of ``train.json`` change size keys only.

The learning check (``t3d_tools.experiments.learning_check``) stacks ``cpu_size*.json`` on the shipped configs; these
tests make sure that what it shows learning is the shipped method: report affinity, crop sampling and jitter, text
freezing and pooling, K, the optimiser and the evaluation geometry all come from ``train.json`` (or the shipped
``ablation_unet_backbone.json``).
"""

from __future__ import annotations

import glob
import json
import os

import pytest
from conftest import BUNDLES

from t3d_tools.experiments.learning_check import PATHS, SIZE_KEYS, size_key_of, size_overrides

CONFIGS = os.path.join(BUNDLES, "t3d_pretrain", "configs")
SIZE_OVERLAYS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CONFIGS, "cpu_size*.json")))
#: ids that decide the method: none of them may appear in a size overlay (a second line of defence behind the
#: allow-list, so that widening SIZE_KEYS by mistake is caught too)
METHOD_KEYS = (
    "report_affinity", "similarity_threshold", "max_positive_fraction", "crop_sampling", "crop_jitter",
    "crops_per_volume", "eval_grid", "text_frozen_layers", "text_pooling", "text_whitening", "text_max_length",
    "learning_rate", "weight_decay", "warmup_fraction", "tcl_weight", "tir_weight", "mask_ratio", "temperature",
    "embed_dim", "use_interactor", "interactor_depth", "interactor_heads", "method", "preprocessing",
    "image_backbone#norm", "image_backbone#embedding_level", "tcl_loss", "optimizer",
)  # fmt: skip


def _ids(config: dict) -> list[str]:
    """Every id a config file sets: its top-level keys (``a#b`` keys as written)."""
    return list(config)


def test_there_is_a_size_overlay_per_path_and_every_path_uses_only_shipped_or_size_configs():
    assert SIZE_OVERLAYS == ["cpu_size.json", "cpu_size_swin.json", "cpu_size_unet.json"]
    for path, configs in PATHS.items():
        shipped = [c for c in configs if not c.startswith("cpu_size")]
        assert shipped[0] == "train.json", path
        # the only shipped overlay a path may add is the backbone ablation the paper names
        assert set(shipped[1:]) <= {"ablation_unet_backbone.json"}, path
        assert all(os.path.isfile(os.path.join(CONFIGS, c)) for c in configs), path


@pytest.mark.parametrize("overlay", SIZE_OVERLAYS)
def test_size_overlays_set_only_size_keys(overlay):
    with open(os.path.join(CONFIGS, overlay), encoding="utf-8") as f:
        ids = _ids(json.load(f))
    assert ids, overlay
    not_size = [i for i in ids if size_key_of(i) is None]
    assert not not_size, f"{overlay}: {not_size} are not size keys ({sorted(SIZE_KEYS)})"
    method = [i for i in ids if any(i == m or i.startswith(m + "#") for m in METHOD_KEYS)]
    assert not method, f"{overlay}: sets method keys {method}"


def test_method_keys_are_not_on_the_allow_list():
    assert not [m for m in METHOD_KEYS if size_key_of(m) is not None]


def test_learning_check_overrides_are_size_keys_and_others_are_refused(tmp_path):
    overrides = size_overrides(steps=10, epochs=2, num_train=40, num_val=8, num_test=16)
    assert overrides and all(size_key_of(k) for k in overrides)
    from t3d_tools.experiments.learning_check import run_learning_check

    with pytest.raises(ValueError, match=r"only size keys may change .* found \['crop_jitter'\]"):
        run_learning_check("unet", str(tmp_path), {"crop_jitter": 2})


def test_size_overlays_resolve_on_the_shipped_configs():
    """Each path's stack parses, keeps the shipped method keys and gets the sizes the overlays name."""
    from monai.bundle import ConfigParser

    with open(os.path.join(CONFIGS, "train.json"), encoding="utf-8") as f:
        shipped = json.load(f)
    for path, configs in PATHS.items():
        parser = ConfigParser()
        parser.read_config([os.path.join(CONFIGS, c) for c in configs])
        for key in ("report_affinity", "crop_sampling", "crop_jitter", "crops_per_volume", "eval_grid",
                    "text_frozen_layers", "text_pooling", "text_whitening", "learning_rate"):  # fmt: skip
            assert parser[key] == shipped[key], (path, key)
        backbone = parser["image_backbone"]
        if path == "unet":
            with open(os.path.join(CONFIGS, "ablation_unet_backbone.json"), encoding="utf-8") as f:
                shipped_unet = json.load(f)["image_backbone"]
            assert backbone["_target_"].endswith("BasicUNetBackbone") and backbone["norm"] == shipped_unet["norm"]
        else:
            assert backbone["_target_"].endswith("SwinUNETRBackbone") and backbone["feature_size"] == 12
