"""What a MONAI user reads before trusting a bundle: metadata, model card and data licence of every bundle.

No training here (seconds): ``verify_metadata`` against the offline schema for every bundle; the packages the
paper-size networks import are named; ``eval_metrics`` is empty (and the card says there are no measured metrics) or
holds measured numbers labelled toy, never a placeholder; every output ``channel_def`` has one entry per channel; a
``large_files.yml`` comes with ``pyyaml``; ``docs/data_license.txt`` names the data the configs expect; the model cards
have the model zoo's sections and say that no trained weights are published.
"""

from __future__ import annotations

import json
import os
import re

import pytest
from conftest import BUNDLES, META_SCHEMA
from monai.bundle import verify_metadata

ALL = sorted(d for d in os.listdir(BUNDLES) if os.path.isfile(os.path.join(BUNDLES, d, "configs", "metadata.json")))
# every bundle's model card
CARDS = ALL
ZOO_SECTIONS = (
    "Model Overview",
    "Data",
    "Training configuration",
    "Input",
    "Output",
    "Performance",
    "MONAI Bundle Commands",
    "References",
    "License",
)
DATA_NAMED = {  # bundle -> what its data_license.txt must name (the data its real configs expect, and the toy's)
    "t3d_btcv_seg": ("Beyond the Cranial Vault", "syn3193805", "Synthetic toy data", "Apache License 2.0"),
    "t3d_msd_lung": ("Task06_Lung", "CC BY-SA 4.0", "Synthetic toy data", "Apache License 2.0"),
    "t3d_brats": ("BraTS 2021", "BraTS 2023", "Task01_BrainTumour", "CC BY-SA 4.0", "Synthetic toy data"),
    "t3d_bimcv_cls": ("BIMCV-COVID19", "data-use agreement", "Synthetic toy data", "Apache License 2.0"),
    "t3d_pretrain": ("BIMCV-COVID19", "data-use agreement", "Synthetic toy data", "Apache License 2.0"),
}


def _read(bundle: str, *path: str) -> str:
    with open(os.path.join(BUNDLES, bundle, *path), encoding="utf-8") as f:
        return f.read()


def _metadata(bundle: str) -> dict:
    return json.loads(_read(bundle, "configs", "metadata.json"))


@pytest.mark.parametrize("bundle", ALL)
def test_metadata_verifies_against_the_schema(bundle):
    verify_metadata(meta_file=os.path.join(BUNDLES, bundle, "configs", "metadata.json"), filepath=META_SCHEMA)


@pytest.mark.parametrize("bundle", ALL)
def test_packages_the_paper_networks_import_are_named(bundle):
    configs = _read(bundle, "configs", "train.json") + _read(bundle, "configs", "inference.json")
    packages = _metadata(bundle)["required_packages_version"]
    assert "optional_packages_version" not in _metadata(bundle)  # MONAI 1.6 renames it; the schema wants "required"
    if "SwinUNETR" in configs:  # monai.networks.nets.swin_unetr: rearrange from einops in every forward
        assert "einops" in packages
    if os.path.isfile(os.path.join(BUNDLES, bundle, "large_files.yml")):  # download_large_files reads it with PyYAML
        assert "pyyaml" in packages


@pytest.mark.parametrize("bundle", ALL)
def test_eval_metrics_are_measured_toy_numbers_or_empty_never_placeholders(bundle):
    metrics = _metadata(bundle)["eval_metrics"]
    for key, value in metrics.items():
        assert "toy" in key.lower(), f"{bundle}: eval_metrics {key!r} is not labelled toy"
        assert isinstance(value, (int, float)) and value not in (0, 0.0), f"{bundle}: placeholder {key} = {value}"
    if not metrics and bundle in CARDS:
        assert "No measured metrics" in _read(bundle, "docs", "README.md")


@pytest.mark.parametrize("bundle", ALL)
def test_every_channel_def_has_one_entry_per_channel(bundle):
    """Network inputs and outputs: ``channel_def`` keys are the channels 0..n-1 (a label map's values, as in
    ``post_processed_outputs``, are not channels)."""
    formats = {k: v for k, v in _metadata(bundle).items() if k.endswith("_data_format")}
    for section in formats.values():
        for kind in ("inputs", "outputs"):
            for name, spec in section.get(kind, {}).items():
                if spec.get("channel_def"):  # an embedding's dimensions have no names
                    assert sorted(map(int, spec["channel_def"])) == list(range(spec["num_channels"])), (kind, name)


def test_brats_pred_channels_are_the_three_regions():
    outputs = _metadata("t3d_brats")["network_data_format"]
    assert list(outputs["outputs"]["pred"]["channel_def"].values()) == [
        "tumour core (TC)",
        "whole tumour (WT)",
        "enhancing tumour (ET)",
    ]
    assert sorted(map(int, outputs["post_processed_outputs"]["pred"]["channel_def"])) == [0, 1, 2, 4]  # the label map


@pytest.mark.parametrize("bundle", ALL)
def test_data_license_names_the_expected_data(bundle):
    text = " ".join(_read(bundle, "docs", "data_license.txt").split())
    for named in DATA_NAMED[bundle]:
        assert named in text, f"{bundle}/docs/data_license.txt does not name {named!r}"


@pytest.mark.parametrize("bundle", CARDS)
def test_model_card_has_the_model_zoo_sections_and_says_no_weights_are_published(bundle):
    card = _read(bundle, "docs", "README.md")
    headings = [line[3:].strip() for line in card.splitlines() if line.startswith("## ")]
    assert [s for s in ZOO_SECTIONS if s not in headings] == []
    assert card.startswith("<!-- weights-status:begin")  # first thing a reader (and the packer) sees
    note = card.split("<!-- weights-status:end -->")[0]
    assert "No trained weights are published" in note and "python -m monai.bundle run" in note
    assert re.search(r"compute: not measured|measured", note)
    assert f"{bundle}_toy" in note  # what a toy build of it is called


@pytest.mark.parametrize("bundle", ["t3d_btcv_seg", "t3d_msd_lung", "t3d_brats", "t3d_bimcv_cls"])
def test_inference_parts_resolve_with_the_device_as_monai_label_sets_it(bundle):
    """MONAI Label replaces ``device`` with the request's device *string* (``"cpu"``, ``"cuda"``), not a
    ``torch.device``, then reads ``network_def``, ``preprocessing``, ``inferer`` and ``postprocessing`` of
    ``inference.json``: every expression they reach must accept both (the classifier's ``network_def`` reads the
    trained bundle's ``models/class_names.json``, so it is left out there)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(os.path.join(BUNDLES, bundle, "configs", "inference.json"))
    parser.read_meta(os.path.join(BUNDLES, bundle, "configs", "metadata.json"))
    parser["device"] = "cpu"
    keys = ("preprocessing", "inferer", "postprocessing", "amp")
    for key in keys if bundle == "t3d_bimcv_cls" else ("network_def", *keys):
        if key in parser:
            assert parser.get_parsed_content(key, instantiate=True) is not None, key
