"""Dataset-layout readers, miniature writers, label conversion and the one-line input errors of the seg bundles."""

from __future__ import annotations

import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from custom.data.seg_datasets import brats, btcv, msd
from custom.data.seg_datasets.common import load_split, write_nifti
from custom.data.synthetic_mr import MR_MODALITIES, render_brain_phantom
from custom.errors import DataError
from custom.transforms.brats_labels import BratsRegionsToLabeld, ConvertToBratsRegionsd
from custom.transforms.seg_checks import CheckImageInputd, CheckSegmentationInputd

SMALL = (16, 16, 16)


def test_btcv_both_layouts_give_the_same_datalist_and_the_published_split(tmp_path):
    flat = btcv.write_miniature(str(tmp_path / "flat"), num_cases=30, shape=SMALL)
    raw = btcv.write_miniature(str(tmp_path / "raw"), num_cases=30, shape=SMALL, layout="RawData")
    for path, image_dir in ((flat, "imagesTr"), (raw, os.path.join("RawData", "Training", "img"))):
        content = json.load(open(path))
        assert (len(content["training"]), len(content["validation"])) == (24, 6)  # MONAI dataset_0.json split
        assert [r["image"] for r in content["validation"]] == [f"{image_dir}/img{n:04d}.nii.gz" for n in range(35, 41)]
    rows = load_split(raw, "validation")
    assert all(os.path.isabs(r["label"]) and os.path.isfile(r["label"]) for r in rows)
    label = nib.load(rows[0]["label"]).get_fdata()
    values = set(np.unique(label))
    assert values <= set(range(14)) and len(values) >= 8  # BTCV ids only: lungs, heart, spine are background


def test_label_fractions_are_nested_and_selected_by_one_key(tmp_path):
    path = btcv.write_miniature(str(tmp_path / "btcv"), num_cases=30, shape=SMALL)
    all_rows = load_split(path, "training")
    tenth = load_split(path, "training", label_fraction=0.1)
    hundredth = load_split(path, "training", label_fraction=0.01)
    ids = [{r["patient_id"] for r in rows} for rows in (hundredth, tenth, all_rows)]
    assert [len(s) for s in ids] == [1, 3, 24]
    assert ids[0] <= ids[1] <= ids[2]
    written = json.load(open(str(tmp_path / "btcv" / "dataset_0_frac10.json")))  # the `prepare` command's files
    assert {r["patient_id"] for r in written["training"]} == ids[1]


def test_msd_lung_reader_and_miniature(tmp_path):
    path = msd.write_lung_miniature(str(tmp_path / "Task06_Lung"), num_cases=10, shape=SMALL)
    content = json.load(open(path))
    assert len(content["training"]) == 8 and len(content["validation"]) == 2 and len(content["test"]) == 1
    assert json.load(open(tmp_path / "Task06_Lung" / "dataset.json"))["labels"] == {"0": "background", "1": "cancer"}
    for row in load_split(path, "training"):
        tumour = nib.load(row["label"]).get_fdata()
        assert set(np.unique(tumour)) == {0, 1}  # every case has a tumour


def test_msd_task01_and_brats2021_read_to_the_same_channels_and_regions(tmp_path):
    task01 = load_split(msd.write_brain_miniature(str(tmp_path / "Task01"), num_cases=3, shape=SMALL), "training")
    brats21 = load_split(brats.write_miniature(str(tmp_path / "BraTS2021"), num_cases=3, shape=SMALL), "training")
    assert task01[0]["tumour_label_scheme"] == "msd_task01" and brats21[0]["tumour_label_scheme"] == "brats"
    assert [os.path.basename(p).split("_")[-1] for p in brats21[0]["image"]] == [f"{m}.nii.gz" for m in MR_MODALITIES]
    load = Compose(
        [LoadImaged(["image", "label"]), EnsureChannelFirstd(["image", "label"]), ConvertToBratsRegionsd("label")]
    )
    by_id = {os.path.basename(r["image"]).split(".")[0]: r for r in task01}
    for row in brats21:  # same seeds -> same phantom in both layouts
        index = int(row["patient_id"].split("_")[1])
        a, b = load(row), load(by_id[f"BRATS_{index + 1:03d}"])
        assert a["image"].shape == b["image"].shape == (4, *SMALL)
        torch.testing.assert_close(a["image"], b["image"])
        torch.testing.assert_close(a["label"], b["label"])
        assert a["label"].shape == (3, *SMALL) and a["label"][1].sum() >= a["label"][0].sum() >= a["label"][2].sum() > 0


def _brats_load():
    return Compose(
        [LoadImaged(["image", "label"]), EnsureChannelFirstd(["image", "label"]), ConvertToBratsRegionsd("label")]
    )


def test_brats2023_layout_reads_to_the_same_channels_and_regions_as_brats2021(tmp_path):
    """Same phantoms written in both layouts: the datalists differ only in file names and label scheme, and the
    loaded channels (FLAIR, T1, T1ce, T2 <- t2f, t1n, t1c, t2w) and TC / WT / ET regions are identical."""
    path21 = brats.write_miniature(str(tmp_path / "BraTS2021"), num_cases=3, shape=SMALL)
    path23 = brats.write_miniature(str(tmp_path / "BraTS2023"), num_cases=3, shape=SMALL, layout="2023")
    content = json.load(open(path23))
    assert content["description"].startswith("BraTS 2023") and content["tumour_label_scheme"] == "brats2023"
    assert content["labels"]["3"].startswith("enhancing") and "4" not in content["labels"]
    rows21, rows23 = load_split(path21, "training"), load_split(path23, "training")
    assert [r["patient_id"].split("-")[2] for r in rows23] == [r["patient_id"].split("_")[1] for r in rows21]
    row = rows23[0]
    assert row["tumour_label_scheme"] == "brats2023"
    assert [os.path.basename(p) for p in row["image"]] == [
        f"BraTS-GLI-00000-000-{m}.nii.gz" for m in ("t2f", "t1n", "t1c", "t2w")
    ]
    assert os.path.basename(row["label"]) == "BraTS-GLI-00000-000-seg.nii.gz"
    assert set(np.unique(nib.load(row["label"]).get_fdata())) == {0, 1, 2, 3}  # 2023 numbering on disk
    load = _brats_load()
    for a_row, b_row in zip(rows21, rows23):
        a, b = load(a_row), load(b_row)
        torch.testing.assert_close(a["image"], b["image"])
        torch.testing.assert_close(a["label"], b["label"])
        assert b["label"].shape == (3, *SMALL) and b["label"][1].sum() >= b["label"][0].sum() >= b["label"][2].sum() > 0
    # inference reads the same four files per case, whatever the layout
    every = sorted(rows23 + load_split(path23, "validation"), key=lambda r: r["patient_id"])
    assert brats.inference_images(str(tmp_path / "BraTS2023")) == [r["image"] for r in every]


def test_brats_folder_of_neither_layout_is_one_line_naming_it(tmp_path):
    brats.write_miniature(str(tmp_path / "b"), num_cases=2, shape=SMALL, layout="2023")
    odd = tmp_path / "b" / "case_007"
    odd.mkdir()
    (odd / "case_007_T1.nii.gz").write_bytes(b"")
    with pytest.raises(DataError) as excinfo:
        brats.build_datalist(str(tmp_path / "b"))
    assert _one_line_error(excinfo) == (
        f"{odd}: expected BraTS 2021 files (case_007_flair.nii.gz, _t1, _t1ce, _t2, _seg) or BraTS 2023 files "
        "(case_007-t2f.nii.gz, -t1n, -t1c, -t2w, -seg), found case_007_T1.nii.gz"
    )


def test_brats_layouts_are_not_mixed_and_2023_missing_files_are_named(tmp_path):
    brats.write_miniature(str(tmp_path / "b"), num_cases=2, shape=SMALL, layout="2023")
    brats.write_miniature(str(tmp_path / "old"), num_cases=2, shape=SMALL)
    os.rename(tmp_path / "old" / "BraTS2021_00000", tmp_path / "b" / "BraTS2021_00000")
    with pytest.raises(DataError) as excinfo:
        brats.build_datalist(str(tmp_path / "b"))
    assert _one_line_error(excinfo) == (
        f"{tmp_path / 'b'}: expected case folders of one BraTS layout, found "
        "BraTS 2021 (BraTS2021_00000), BraTS 2023 (BraTS-GLI-00000-000)"
    )
    shutil.rmtree(tmp_path / "b" / "BraTS2021_00000")
    case = tmp_path / "b" / "BraTS-GLI-00001-000"
    os.remove(case / "BraTS-GLI-00001-000-t1c.nii.gz")
    with pytest.raises(DataError) as excinfo:
        brats.build_datalist(str(tmp_path / "b"))
    assert _one_line_error(excinfo) == f"{case}: expected modality 't1c' (BraTS-GLI-00001-000-t1c.nii.gz), found none"


def test_brats2023_label_values_outside_its_scheme():
    label = torch.zeros(1, *SMALL)
    label[0, 1, 1, 1] = 4  # a BraTS 2021 value in a file read with the 2023 numbering
    with pytest.raises(DataError) as excinfo:
        ConvertToBratsRegionsd("label")({"label": label, "tumour_label_scheme": "brats2023"})
    assert "expected label values in [0, 1, 2, 3], found [4]" in _one_line_error(excinfo)


def test_brats_regions_round_trip_to_the_label_map():
    phantom = render_brain_phantom(SMALL, seed=3)
    label = torch.as_tensor(phantom.label)[None]
    regions = ConvertToBratsRegionsd("label")({"label": label})["label"]
    back = BratsRegionsToLabeld("pred")({"pred": regions})["pred"]
    assert back.shape == (1, *SMALL) and set(torch.unique(back).tolist()) == {0, 1, 2, 4}
    torch.testing.assert_close(back.to(torch.uint8), label.to(torch.uint8))


def test_synthetic_mr_contrast_makes_regions_separable():
    phantom = render_brain_phantom((32, 32, 32), seed=0)
    flair, t1, t1ce, t2 = phantom.image
    edema, enhancing, necrotic = (phantom.label == 2), (phantom.label == 4), (phantom.label == 1)
    brain = phantom.image[0] > 0
    normal = brain & (phantom.label == 0)
    assert flair[edema].mean() > flair[normal].mean() + 0.3
    assert t1ce[enhancing].mean() > t1ce[normal].mean() + 0.4
    assert t1ce[necrotic].mean() < t1ce[enhancing].mean() - 0.6
    assert (phantom.image[:, ~brain] == 0).all()  # skull-stripped


# ---------------------------------------------------------------- bad inputs: one-line DataError naming the file


def _check(row: dict, **kwargs) -> dict:
    load = Compose([LoadImaged(["image", "label"]), EnsureChannelFirstd(["image", "label"])])
    return CheckSegmentationInputd(**kwargs)(load(row))


def _one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def btcv_case(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("btcv_bad")
    return load_split(btcv.write_miniature(str(folder), num_cases=2, shape=SMALL), "training")[0]


def test_good_case_passes_checks(btcv_case):
    out = _check(btcv_case, in_channels=1, label_values=range(14))
    assert out["image"].shape == (1, *SMALL)


def test_label_shape_mismatch(btcv_case, tmp_path):
    bad = str(tmp_path / "label_shape.nii.gz")
    write_nifti(np.zeros((16, 16, 15), np.uint8), np.diag([12.0, 12.0, 8.0, 1.0]), bad)
    with pytest.raises(DataError) as excinfo:
        _check({**btcv_case, "label": bad}, in_channels=1)
    expected = "expected the label's spatial shape to equal the image's (16, 16, 16), found (16, 16, 15)"
    assert expected in _one_line_error(excinfo)


def test_label_affine_mismatch(btcv_case, tmp_path):
    image = nib.load(btcv_case["label"])
    bad = str(tmp_path / "label_affine.nii.gz")
    shifted = image.affine.copy()
    shifted[0, 3] += 5.0
    write_nifti(np.asarray(image.dataobj), shifted, bad)
    with pytest.raises(DataError) as excinfo:
        _check({**btcv_case, "label": bad}, in_channels=1)
    assert "expected the label's affine to equal the image's, found a difference of 5" in _one_line_error(excinfo)


def test_label_values_outside_channel_def(btcv_case, tmp_path):
    image = nib.load(btcv_case["label"])
    values = np.asarray(image.dataobj).copy()
    values[0, 0, 0] = 17
    bad = str(tmp_path / "label_values.nii.gz")
    write_nifti(values, image.affine, bad)
    with pytest.raises(DataError) as excinfo:
        _check({**btcv_case, "label": bad}, in_channels=1, label_values=range(14))
    assert bad in _one_line_error(excinfo) and "found [17]" in str(excinfo.value)


def test_wrong_channel_count_for_the_network(btcv_case):
    with pytest.raises(DataError) as excinfo:
        _check(btcv_case, in_channels=4)
    assert "expected 4 image channel(s) for the network, found 1" in _one_line_error(excinfo)


def test_brats_case_with_a_missing_modality(tmp_path):
    brats.write_miniature(str(tmp_path / "b"), num_cases=2, shape=SMALL)
    case = tmp_path / "b" / "BraTS2021_00001"
    os.remove(case / "BraTS2021_00001_t1ce.nii.gz")
    with pytest.raises(DataError) as excinfo:
        brats.build_datalist(str(tmp_path / "b"))
    assert "expected modality 't1ce' (BraTS2021_00001_t1ce.nii.gz), found none" in _one_line_error(excinfo)


def test_brats_label_values_outside_the_scheme(tmp_path):
    label = torch.zeros(1, *SMALL)
    label[0, 1, 1, 1] = 3  # a Task01 value in a file read as BraTS numbering
    with pytest.raises(DataError) as excinfo:
        ConvertToBratsRegionsd("label")({"label": label, "tumour_label_scheme": "brats"})
    assert "expected label values in [0, 1, 2, 4], found [3]" in _one_line_error(excinfo)


def test_missing_datalist_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="datalist not found"):
        load_split(str(tmp_path / "nope.json"))
    path = btcv.write_miniature(str(tmp_path / "btcv"), num_cases=2, shape=SMALL)
    shutil.rmtree(tmp_path / "btcv" / "labelsTr")
    with pytest.raises(DataError, match="label file not found"):
        load_split(path, "training")


def test_nan_voxels_are_refused_before_training(btcv_case, tmp_path):
    image = nib.load(btcv_case["image"])
    values = np.asarray(image.dataobj).astype(np.float32)
    values[3, 4, 5] = np.nan
    values[0, 0, 0] = np.inf
    bad = str(tmp_path / "nan_image.nii.gz")
    write_nifti(values, image.affine, bad)
    with pytest.raises(DataError) as excinfo:
        _check({**btcv_case, "image": bad}, in_channels=1)
    assert f"{bad}: expected finite intensities, found 2 NaN/inf voxels" == _one_line_error(excinfo)


def test_singular_affine_is_refused():
    singular = torch.diag(torch.tensor([2.0, 2.0, 0.0, 1.0], dtype=torch.float64))
    image = MetaTensor(torch.zeros(1, *SMALL), affine=singular, meta={"filename_or_obj": "flat.nii.gz"})
    with pytest.raises(DataError) as excinfo:
        CheckImageInputd(in_channels=1)({"image": image})
    assert "flat.nii.gz: expected an invertible affine" in _one_line_error(excinfo)


def test_malformed_datalist_is_one_line_naming_the_file_and_line(tmp_path):
    bad = tmp_path / "dataset_0.json"
    bad.write_text('{"training": [\n  {"image": "a.nii.gz",}\n]}')
    with pytest.raises(DataError) as excinfo:
        load_split(str(bad))
    assert _one_line_error(excinfo) == f"{bad}: expected JSON, found a syntax error at line 2"


def test_volume_below_the_minimum_size_is_refused_in_training_and_inference_pipelines(btcv_case, tmp_path):
    image = nib.load(btcv_case["image"])
    tiny = str(tmp_path / "tiny.nii.gz")
    write_nifti(np.asarray(image.dataobj)[:10, :10, :3], image.affine, tiny)
    load = Compose([LoadImaged("image"), EnsureChannelFirstd("image")])
    with pytest.raises(DataError) as excinfo:
        CheckImageInputd(in_channels=1)(load({"image": tiny}))
    expected = f"{tiny}: expected a 3D volume with at least 8 voxels along every axis, found spatial shape (10, 10, 3)"
    assert _one_line_error(excinfo) == expected


def test_label_fractions_group_patient_ids_ignoring_case_and_whitespace():
    """Every subset holds all rows of a patient or none, with the patient's id spelled three ways (issue #31)."""
    from custom.data.label_fractions import label_fraction_subsets

    spellings = ["P7", " p7 ", "p7"]
    rows = [{"image": f"x{k}.nii.gz", "patient_id": s} for k, s in enumerate(spellings)]
    rows += [{"image": f"q{i}.nii.gz", "patient_id": f"q{i}"} for i in range(9)]
    counts = set()
    for seed in range(12):
        for subset in label_fraction_subsets(rows, (0.1, 0.5, 1.0), seed=seed).values():
            count = sum(r["patient_id"] in spellings for r in subset)
            assert count in (0, 3), (seed, subset)
            counts.add(count)
    assert counts == {0, 3}
