"""Bounded work and one patient rule (issue #31): tiny hostile files are refused from their header before any voxel
is decoded, zip caps hold before extraction, the integrity checker reports per file and goes on, and patient ids are
compared one way (key aliases, whitespace, case) by every checker."""

from __future__ import annotations

import gzip
import json
import os
import time
import zipfile

import nibabel as nib
import numpy as np
import pytest

from custom.data.checks import refuse_patient_leakage
from custom.errors import DataError
from custom.transforms.volume_checks import check_nifti_header, load_nifti_checked


def _hostile_nifti(path, shape=(2000, 2000, 2000)) -> str:
    """A ~1 KB .nii.gz whose header claims ``shape`` float32 voxels (32 GB for 2000^3) and holds 100 bytes."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header.set_qform(np.eye(4), code=1)
    raw = header.binaryblock + b"\x00" * 4 + b"\x01" * 100
    with gzip.open(path, "wb") as f:
        f.write(raw)
    return str(path)


def _volume(path, shape=(16, 16, 16), seed=0, affine=None) -> str:
    array = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return str(path)


@pytest.mark.parametrize("shape", [(2000, 2000, 2000), (1000, 1000, 1000), (4000, 4000, 4000)])
def test_a_header_claiming_more_than_the_file_holds_is_refused_before_reading(tmp_path, shape):
    path = _hostile_nifti(tmp_path / "claims.nii.gz", shape)
    assert os.path.getsize(path) < 2000
    start = time.process_time()
    with pytest.raises(DataError) as caught:
        load_nifti_checked(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: expected at most ") or message.startswith(f"{path}: expected "), message
    assert "\n" not in message and str(shape) in message and "not read" in message
    assert time.process_time() - start < 5.0  # nothing decoded (reading 1000^3 took 31 s and 2 GB before)


def test_the_voxel_cap_is_configurable(tmp_path, monkeypatch):
    path = _volume(tmp_path / "ok.nii.gz")
    load_nifti_checked(path)  # 4096 voxels: under the default cap
    with pytest.raises(DataError, match=r"expected at most 1000 voxels \(T3D_MAX_VOXELS\), found a header claiming"):
        load_nifti_checked(path, max_voxels=1000)
    monkeypatch.setenv("T3D_MAX_VOXELS", "1000")
    with pytest.raises(DataError, match="expected at most 1000 voxels"):
        check_nifti_header(path)
    monkeypatch.setenv("T3D_MAX_VOXELS", "lots")
    with pytest.raises(DataError, match="T3D_MAX_VOXELS: expected a number of voxels, found 'lots'"):
        check_nifti_header(path)


def test_an_uncompressed_nifti_cut_short_is_refused_from_its_size(tmp_path):
    path = _volume(tmp_path / "cut.nii")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) - 100])
    with pytest.raises(DataError, match=r"cut.nii: expected \d+ bytes of NIfTI data for the header's shape"):
        check_nifti_header(path)


def test_monai_loader_refuses_the_hostile_header_too(tmp_path):
    from custom.transforms.seg_checks import LoadImageCheckedd

    path = _hostile_nifti(tmp_path / "claims.nii.gz")
    with pytest.raises(DataError, match="not read"):
        LoadImageCheckedd(keys="image", image_only=True)({"image": path})


def test_the_integrity_checker_reports_per_file_and_goes_on(tmp_path, monkeypatch, capsys):
    from custom.data import integrity
    from custom.transforms import volume_checks

    good = [_volume(tmp_path / f"good{i}.nii.gz", seed=i) for i in range(3)]
    hostile = _hostile_nifti(tmp_path / "claims.nii.gz", (4000, 4000, 4000))
    exhausting = _volume(tmp_path / "exhausting.nii.gz", seed=9)
    rows = [{"image": p, "report": "No effusion.", "patient_id": f"P{i}"} for i, p in enumerate(good)]
    rows += [
        {"image": hostile, "report": "No effusion.", "patient_id": "H"},
        {"image": exhausting, "report": "No effusion.", "patient_id": "M"},
    ]
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": rows[:2] + rows[3:], "validation": [rows[2]]}))
    real_load = nib.load

    def load(path, *args, **kwargs):  # this one file exhausts memory when decoded
        image = real_load(path, *args, **kwargs)
        if str(path) == exhausting:

            class Exhausting:
                shape = image.shape
                affine = image.affine
                header = image.header

                @property
                def dataobj(self):
                    raise MemoryError("Unable to allocate 238. GiB")

            return Exhausting()
        return image

    monkeypatch.setattr(volume_checks.nib, "load", load)
    assert integrity.main(["--datalist", str(datalist)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert "Traceback" not in captured.out + captured.err
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"{datalist} [training #2] {hostile}: expected at most ") and "not read" in lines[0]
    assert lines[1] == (
        f"{datalist} [training #3] {exhausting}: expected a readable volume, found MemoryError: Unable to allocate "
        "238. GiB"
    )
    assert captured.err.strip() == f"{datalist}: 2 problem(s)"


def test_integrity_takes_the_expected_channel_count(tmp_path):
    from custom.data.integrity import verify_datalist

    array = np.random.default_rng(0).normal(size=(16, 16, 16, 2)).astype(np.float32)
    four_d = str(tmp_path / "two_channels.nii.gz")
    nib.save(nib.Nifti1Image(array, np.eye(4)), four_d)
    label = str(tmp_path / "label.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 16), np.uint8), np.eye(4)), label)
    datalist = tmp_path / "seg.json"
    datalist.write_text(json.dumps({"training": [{"image": four_d, "label": label}]}))
    assert verify_datalist(str(datalist), "segmentation", 2) == []  # no expectation given: a 4D file passes
    problems = verify_datalist(str(datalist), "segmentation", 2, in_channels=1)
    assert problems == [
        f"{datalist} [training #0] {four_d}: expected 1 image channel(s) (--in_channels), found 2 "
        "(a 4D file's last axis)"
    ]
    assert verify_datalist(str(datalist), "segmentation", 2, in_channels=2) == []


# ---- one patient rule ----
@pytest.mark.parametrize(
    "train_patient, val_row_patient",
    [
        ({"patient_id": "ID"}, {"PatientID": "ID"}),  # the alias the CSV reader accepts
        ({"patient_id": "ID "}, {"patient_id": "ID"}),  # whitespace
        ({"patient_id": "id"}, {"patient_id": "ID"}),  # case
        ({"Patient_ID": " Id"}, {"patientId": "iD\t"}),
    ],
)
def test_one_patient_rule_catches_aliases_whitespace_and_case(tmp_path, train_patient, val_row_patient):
    from custom.data.datalist import read_split
    from custom.data.integrity import verify_datalist

    images = [_volume(tmp_path / f"v{i}.nii.gz", seed=i) for i in range(2)]
    path = tmp_path / "pairs.json"
    path.write_text(
        json.dumps(
            {
                "training": [{"image": images[0], "report": "No nodule.", **train_patient}],
                "validation": [{"image": images[1], "report": "Small nodule.", **val_row_patient}],
            }
        )
    )
    problems = verify_datalist(str(path))
    assert len(problems) == 1 and "expected in one split, found in ['training', 'validation']" in problems[0]
    splits = {split: read_split(str(path), split) for split in ("training", "validation")}
    with pytest.raises(DataError, match="expected in one split"):
        refuse_patient_leakage(splits, str(path))


def test_a_malformed_row_is_reported_and_its_split_still_checked(tmp_path):
    from custom.data.integrity import verify_datalist

    images = [_volume(tmp_path / f"v{i}.nii.gz", seed=i) for i in range(2)]
    path = tmp_path / "pairs.json"
    path.write_text(
        json.dumps(
            {
                "training": [{"image": images[0], "report": "No nodule.", "patient_id": "A"}],
                "validation": [42, {"image": images[1], "report": "Nodule.", "patient_id": "A"}],
            }
        )
    )
    problems = verify_datalist(str(path))
    assert problems == [
        f"{path} [validation #0]: expected a row with an 'image' (an object, or an image path), found 42",
        "patient_id A: expected in one split, found in ['training', 'validation']",
    ]


def test_a_study_repeated_in_one_split_is_reported_and_refused(tmp_path):
    from custom.data.datalist import read_split
    from custom.data.integrity import verify_datalist

    images = [_volume(tmp_path / f"v{i}.nii.gz", seed=i) for i in range(2)]
    row = {"image": images[0], "report": "No nodule.", "patient_id": "A"}
    path = tmp_path / "pairs.json"
    path.write_text(
        json.dumps(
            {"training": [row] * 8, "validation": [{"image": images[1], "report": "Nodule.", "patient_id": "B"}]}
        )
    )
    assert verify_datalist(str(path)) == [
        f"{path}: image {images[0]}: expected once in 'training', found in 8 rows (#0, #1, #2, #3, #4)"
    ]
    splits = {split: read_split(str(path), split) for split in ("training", "validation")}
    with pytest.raises(DataError, match=r"expected once in 'training', found in 8 rows .*each study must be one row"):
        refuse_patient_leakage(splits, str(path))


# ---- zip caps ----
@pytest.mark.parametrize("cap", ["ratio", "total", "entries"])
def test_zip_caps_refuse_before_anything_is_decompressed(tmp_path, cap):
    from t3d_tools.packaging.archive import ArchiveError, validate_bundle_archive

    path = str(tmp_path / f"{cap}.zip")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("b/configs/metadata.json", "{}")
        if cap == "entries":
            for i in range(50):
                archive.writestr(f"b/f{i}.txt", "x")
        else:
            archive.writestr("b/models/model.pt", b"\x00" * (8 * 2**20))  # 8 MiB of zeros: ~8 KiB packed
    limits = {"ratio": {}, "total": {"max_total_bytes": 2**20, "max_ratio": 1e9}, "entries": {"max_entries": 20}}
    expected = {
        "ratio": r"expected a compression ratio of at most 200:1, found member 'b/models/model.pt' unpacking \d+ bytes",
        "total": r"expected at most 0.000977 GiB unpacked, found members declaring 0.00781 GiB",
        "entries": "expected at most 20 members in a bundle zip, found 51",
    }
    import zipfile as zip_module

    calls = []
    real_open = zip_module.ZipFile.open
    zip_module.ZipFile.open = lambda self, *a, **k: calls.append(a) or real_open(self, *a, **k)
    try:
        with pytest.raises(ArchiveError, match=f"^{path}: {expected[cap]}"):
            validate_bundle_archive(path, **limits[cap])
    finally:
        zip_module.ZipFile.open = real_open
    assert calls == []  # refused from the directory alone: no member opened


# ---- outputs never collide ----
def test_inference_inputs_with_one_output_name_are_refused_naming_both():
    from custom.data.checks import refuse_output_collisions

    assert refuse_output_collisions(["/d/patA/ct.nii.gz", "/d/patA/pet.nii.gz", "/d/patA/ct.nii.gz"], "seg")
    with pytest.raises(DataError) as caught:
        refuse_output_collisions(["/d/patA/ct.nii.gz", "/d/patB/ct.nii", "/d/patC/ct.nii.gz"], "seg")
    assert str(caught.value) == (
        "/d/patA/ct.nii.gz and /d/patB/ct.nii: expected inputs whose outputs have distinct names, found both "
        "writing ct_seg.* to the one output folder; rename one, or run them with separate --output_dir"
    )
    with pytest.raises(DataError, match="a/t1.nii.gz and b/t1.nii.gz"):  # multi-channel rows: named by the first
        refuse_output_collisions([["a/t1.nii.gz", "a/t2.nii.gz"], ["b/t1.nii.gz", "b/t2.nii.gz"]], "seg")
    rows = [{"image": "/v/patA/ct.nii.gz", "label": "/v/patA/seg.nii.gz"}, {"image": "/v/patB/ct.nii.gz"}]
    with pytest.raises(DataError, match="/v/patA/ct.nii.gz and /v/patB/ct.nii.gz"):  # an evaluated split's rows
        refuse_output_collisions(rows, "seg")


@pytest.mark.parametrize("bundle", ["t3d_btcv_seg", "t3d_msd_lung", "t3d_brats"])
def test_evaluation_refuses_split_images_with_one_output_name(bundle):
    """evaluate.json writes each evaluated image's segmentation into the flat output folder, as inference does: two
    rows of the split named ``ct.nii.gz`` are refused before anything runs, naming both."""
    from monai.bundle import ConfigParser

    from custom.runtime.errors import one_line_message

    configs = os.path.join(os.path.dirname(__file__), "..", "bundles", bundle, "configs")
    parser = ConfigParser()
    parser.read_config([os.path.join(configs, name) for name in ("train.json", "evaluate.json")])
    (check,) = [i for i, item in enumerate(parser["initialize"]) if "refuse_output_collisions" in str(item)]
    parser["validate#dataset#data"] = [{"image": "/v/patA/ct.nii.gz"}, {"image": "/v/patB/ct.nii.gz"}]
    with pytest.raises(RuntimeError) as caught:  # MONAI wraps it; the run's error hook prints the DataError's line
        parser.get_parsed_content(f"initialize#{check}")
    message = one_line_message(caught.value)
    assert message.startswith("/v/patA/ct.nii.gz and /v/patB/ct.nii.gz: expected inputs whose outputs"), message
    parser["validate#dataset#data"] = [{"image": "/v/patA/ct.nii.gz"}, {"image": "/v/patB/pet.nii.gz"}]
    parser.parse()
    assert parser.get_parsed_content(f"initialize#{check}") is True


# ---- content that is empty in effect ----
@pytest.mark.parametrize("text", ["\x00\x00\x00", "\u200b\u200c\u200d", "\ufeff \u2060\n\x07", "\u200e"])
def test_reports_of_invisible_characters_are_refused(text):
    from custom.data.checks import check_report_text

    with pytest.raises(DataError, match="expected a non-empty report, found only control or zero-width characters"):
        check_report_text(text, "reports.csv row 3")
    assert check_report_text(f"{text}Small nodule.", "r") == f"{text}Small nodule.".strip()


def test_an_overlong_report_is_truncated_with_a_warning_that_counts(tmp_path, caplog, monkeypatch):
    from custom.data.checks import read_report

    path = tmp_path / "long.txt"
    path.write_text("No effusion. " * 100_000, encoding="utf-8")  # 1.3 MB
    monkeypatch.setenv("T3D_MAX_REPORT_CHARS", "5000")
    with caplog.at_level("WARNING"):
        report = read_report(str(path), str(tmp_path), "row")
    assert len(report) <= 5000 and report.startswith("No effusion.")
    assert f"{path}: report of 1300000 bytes truncated to the first 5000 characters" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert len(read_report("Nodule. " * 1000, str(tmp_path), "row 7")) == 5000
    assert "row 7: report of 7999 characters truncated to the first 5000" in caplog.text


def test_complex_voxels_are_refused_before_reading(tmp_path):
    import torch

    from custom.transforms.seg_checks import LoadImageCheckedd, check_image_tensor

    path = str(tmp_path / "complex.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((16, 16, 16), np.complex64), np.eye(4)), path)
    with pytest.raises(DataError, match=r"complex.nii.gz: expected real-valued voxels \(integer or float\), found "):
        load_nifti_checked(path)
    with pytest.raises(DataError, match="expected real-valued voxels"):
        LoadImageCheckedd(keys="image", image_only=True)({"image": path})
    with pytest.raises(DataError, match="t: expected real-valued voxels"):
        check_image_tensor(torch.ones(1, 16, 16, 16, dtype=torch.complex64), "t")
