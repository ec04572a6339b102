"""The dataset integrity checker flags every planted defect of a broken datalist and nothing in a clean one."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest

from custom.data.integrity import detect_kind, main, verify_datalist
from custom.data.synthetic_ct import FINDING_NAMES, render_phantom, sample_findings

SHAPE = (24, 24, 16)
SPACING = (10.0, 10.0, 12.0)
SEG_LABELS = {str(i): f"class {i}" for i in range(14)}  # BTCV: background + 13 organs


def _save(folder, name: str, array: np.ndarray, affine: np.ndarray | None = None) -> str:
    path = os.path.join(folder, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([*SPACING, 1.0]) if affine is None else affine), path)
    return name


def _write(folder, name: str, datalist: dict) -> str:
    path = os.path.join(folder, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(datalist, f)
    return path


def _case(folder, index: int, rng: np.random.Generator) -> tuple[str, str, list]:
    """A phantom image and its BTCV organ label map (ids above 13 set to background): (image, label, findings)."""
    findings = sample_findings(rng)
    phantom = render_phantom(findings, shape=SHAPE, spacing=SPACING, seed=index)
    organs = np.where(phantom.organs <= 13, phantom.organs, 0).astype(np.uint8)
    image = _save(folder, f"images/case{index}.nii.gz", phantom.image)
    label = _save(folder, f"labels/case{index}.nii.gz", organs)
    return image, label, [f.name for f in findings]


@pytest.fixture()
def dataset(tmp_path):
    """Four clean cases (patients P0..P3) in ``tmp_path``: image + label + findings each."""
    rng = np.random.default_rng(0)
    return tmp_path, [_case(tmp_path, i, rng) for i in range(4)]


def _seg_rows(cases):
    return [{"image": image, "label": label} for image, label, _ in cases]


def _pair_rows(cases):
    return [
        {
            "image": image,
            "report": "Report text.",
            "patient_id": f"P{i}",
            "study_id": f"S{i}",
            "labels": findings,
            "label_vector": [int(n in findings) for n in FINDING_NAMES],
        }
        for i, (image, _, findings) in enumerate(cases)
    ]


def test_clean_datalists_have_no_problems(dataset, capsys):
    folder, cases = dataset
    test_image = _case(folder, 9, np.random.default_rng(9))[0]
    seg = _write(
        folder,
        "seg.json",
        {
            "labels": SEG_LABELS,
            "training": _seg_rows(cases[:3]),
            "validation": _seg_rows(cases[3:]),
            "test": [test_image],
        },
    )  # Decathlon-style bare test image path
    pairs = _write(
        folder,
        "pairs.json",
        {"finding_names": list(FINDING_NAMES), "training": _pair_rows(cases)[:3], "validation": _pair_rows(cases)[3:]},
    )
    assert verify_datalist(seg) == [] and verify_datalist(pairs) == []
    assert verify_datalist(seg, kind="segmentation", num_classes=14) == []
    assert main(["--datalist", pairs]) == 0
    assert capsys.readouterr().out.strip().endswith(": OK")


def test_kind_detection():
    assert detect_kind([{"image": "a", "report": "r"}]) == "pairs"
    assert detect_kind([{"image": "a", "label": "b.nii.gz"}]) == "segmentation"
    assert detect_kind([{"image": "a", "label": [0, 1]}]) == "classification"
    assert detect_kind(["a.nii.gz"]) == "images"


def test_every_planted_segmentation_defect_is_flagged_once(dataset):
    folder, cases = dataset
    phantom = render_phantom([], shape=SHAPE, spacing=SPACING)
    organs = np.where(phantom.organs <= 13, phantom.organs, 0).astype(np.uint8)
    with open(os.path.join(folder, cases[0][0]), "rb") as f:
        data = f.read()
    with open(os.path.join(folder, "images/truncated.nii.gz"), "wb") as f:
        f.write(data[: len(data) // 2])
    nan_image = phantom.image.astype(np.float32)
    nan_image[3, 4, 5] = np.nan
    bad_values = organs.copy()
    bad_values[0, 0, 0] = 99
    shifted = np.diag([*SPACING, 1.0])
    shifted[0, 3] = 5.0
    planted = {  # row -> the text its one problem line must contain
        "missing file": ({"image": "images/nowhere.nii.gz", "label": cases[0][1]}, "image file not found"),
        "truncated image": ({"image": "images/truncated.nii.gz", "label": cases[0][1]}, "corrupt or truncated"),
        "2D image": (
            {"image": _save(folder, "images/flat.nii.gz", phantom.image[:, :, 0]), "label": cases[0][1]},
            "expected a 3D volume",
        ),
        "NaN voxels": ({"image": _save(folder, "images/nan.nii.gz", nan_image), "label": cases[0][1]}, "NaN/inf"),
        "absurd spacing": (
            {
                "image": _save(folder, "images/tiny.nii.gz", phantom.image, np.diag([0.001, 1, 1, 1])),
                "label": _save(folder, "labels/tiny.nii.gz", organs, np.diag([0.001, 1, 1, 1])),
            },
            "voxel spacing",
        ),
        "label shape": (
            {"image": cases[1][0], "label": _save(folder, "labels/crop.nii.gz", organs[:, :, :8])},
            "spatial shape",
        ),
        "label affine": (
            {"image": cases[1][0], "label": _save(folder, "labels/shifted.nii.gz", organs, shifted)},
            "label's affine",
        ),
        "label values": (
            {"image": cases[2][0], "label": _save(folder, "labels/bad.nii.gz", bad_values)},
            "expected label values in",
        ),
    }
    rows = [row for row, _ in planted.values()]
    path = _write(folder, "broken_seg.json", {"labels": SEG_LABELS, "training": _seg_rows(cases) + rows})
    problems = verify_datalist(path)
    for offset, (name, (_, expected)) in enumerate(planted.items()):
        lines = [p for p in problems if f"[training #{len(cases) + offset}] " in p]
        assert len(lines) == 1 and expected in lines[0], (name, lines)
    # the label rows reuse the images of cases 1 and 2: each is a study repeated within training (issue #31)
    repeated = [p for p in problems if "expected once in 'training'" in p]
    assert sorted(p.split("image ")[1].split(":")[0] for p in repeated) == sorted(
        os.path.normpath(os.path.join(folder, cases[i][0])) for i in (1, 2)
    )
    assert len(problems) - len(repeated) == len(planted)  # nothing flagged in the clean rows


def test_every_planted_pairs_defect_is_flagged_once(dataset, capsys):
    folder, cases = dataset
    with open(os.path.join(folder, "latin1.txt"), "wb") as f:
        f.write("Derrame pleural. Pulmón normal.".encode("latin-1"))
    clean = _pair_rows(cases)
    broken = [
        {**clean[0], "report": "   ", "patient_id": "Q1"},
        {**clean[1], "report": "latin1.txt", "patient_id": "Q2"},
        {**clean[2], "label_vector": [0, 1], "patient_id": "Q3"},
    ]
    leak = {**clean[3], "image": cases[3][0], "patient_id": "P0"}  # P0 is in training as well
    path = _write(
        folder,
        "broken_pairs.json",
        {"finding_names": list(FINDING_NAMES), "training": clean[:3] + broken, "validation": [leak]},
    )
    problems = verify_datalist(path)
    expected = {
        "[training #3] ": "non-empty report",
        "[training #4] ": "UTF-8",
        "[training #5] ": "one per class",
        "patient_id P0": "expected in one split",
    }
    for prefix, text in expected.items():
        lines = [p for p in problems if p.startswith(prefix) or f" {prefix}" in p]
        assert len(lines) == 1 and text in lines[0], (prefix, problems)
    # the broken rows reuse the clean rows' images: three studies repeated within training (issue #31)
    repeated = [p for p in problems if "expected once in 'training', found in 2 rows" in p]
    assert len(repeated) == 3
    assert len(problems) == len(expected) + len(repeated)
    assert main(["--datalist", path]) == 1
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == len(problems)  # one line per problem


def test_classification_vectors_and_image_leaks(dataset):
    folder, cases = dataset
    rows = [{"image": image, "label": [1, 0, 1], "patient_id": f"P{i}"} for i, (image, _, _) in enumerate(cases)]
    path = _write(folder, "cls.json", {"class_names": ["a", "b", "c"], "training": rows[:3], "validation": rows[3:]})
    assert verify_datalist(path) == []
    bad = [{**rows[0], "label": [1, 0]}, {**rows[1], "label": [1, 2, 0], "patient_id": "X"}]
    leak = {**rows[2], "patient_id": "Y"}
    path = _write(folder, "cls_bad.json", {"class_names": ["a", "b", "c"], "training": bad + rows[2:3], "test": [leak]})
    problems = verify_datalist(path, kind="classification")
    assert len(problems) == 3, problems
    assert "one per class" in problems[0] and "only 0/1" in problems[1] and "expected in one split" in problems[2]


def test_csv_datalist_is_read_as_csv_and_checked_like_json(dataset):
    folder, cases = dataset
    path = os.path.join(folder, "pairs.csv")

    def write(rows):
        with open(path, "w", encoding="utf-8") as f:
            f.write("path,Report_en,split,patient_id\n" + "".join(f"{r[0]},{r[1]},{r[2]},{r[3]}\n" for r in rows))
        return path

    clean = [
        (image, "No acute findings.", "training" if i < 3 else "validation", f"P{i}")
        for i, (image, _, _) in enumerate(cases)
    ]
    assert verify_datalist(write(clean)) == []  # used to report a JSON syntax error for any CSV
    leaked = clean[:3] + [(cases[3][0], "No acute findings.", "validation", "P0")]
    assert verify_datalist(write(leaked)) == [
        "patient_id P0: expected in one split, found in ['training', 'validation']"
    ]


def test_4d_volume_is_a_problem_in_a_single_channel_datalist_only(dataset):
    folder, cases = dataset
    four_d = _save(folder, "images/four_d.nii.gz", np.zeros((*SHAPE, 2), np.float32))
    pairs = _pair_rows(cases)
    pairs[0]["image"] = four_d
    problems = verify_datalist(
        _write(folder, "pairs4d.json", {"finding_names": list(FINDING_NAMES), "training": pairs})
    )
    assert len(problems) == 1 and "expected a 3D volume, found shape" in problems[0], problems
    seg = _seg_rows(cases)
    seg[0]["image"] = four_d
    seg_problems = verify_datalist(
        _write(folder, "seg4d.json", {"labels": SEG_LABELS, "training": seg}), kind="segmentation"
    )
    assert not any("3D volume" in p for p in seg_problems), seg_problems


def test_the_summary_is_the_last_line_printed_with_the_problems_above(dataset):
    """Problem lines go to stdout and the summary to stderr; read together through one pipe (stdout then
    block-buffered), the summary must still come last, and an error outside the row checks is a problem line."""
    import subprocess
    import sys

    folder, cases = dataset
    rows = _seg_rows(cases)
    rows[0]["label"] = "labels/missing.nii.gz"
    path = _write(folder, "seg_bad.json", {"labels": SEG_LABELS, "training": rows, "validation": [42]})
    command = [sys.executable, "-m", "custom.data.integrity", "--datalist", path]
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert done.returncode == 1 and lines[-1] == f"{path}: 2 problem(s)", done.stdout
    assert "missing.nii.gz" in lines[-3] and "found 42" in lines[-2], done.stdout


def test_an_error_outside_the_row_checks_ends_in_the_summary(dataset, capsys, monkeypatch):
    import custom.data.integrity as integrity

    def broken(*args, **kwargs):
        raise MemoryError("patient table")

    monkeypatch.setattr(integrity, "patient_split_problems", broken)
    path = _write(dataset[0], "seg.json", {"labels": SEG_LABELS, "training": _seg_rows(dataset[1])})
    assert main(["--datalist", path]) == 1
    printed = capsys.readouterr()
    assert printed.out.strip().splitlines() == [
        f"{path}: expected a checkable datalist, found MemoryError: patient table"
    ]
    assert printed.err.strip().splitlines()[-1] == f"{path}: 1 problem(s)"


def test_in_channels_is_the_bundles_channel_count(dataset):
    """``--in_channels`` (the bundle network's, 4 for BraTS) refuses a row with another channel count."""
    folder, cases = dataset
    two = _save(folder, "images/two.nii.gz", np.zeros((*SHAPE, 2), np.float32))
    rows = _seg_rows(cases)
    rows[0]["image"] = two
    path = _write(folder, "seg2.json", {"labels": SEG_LABELS, "training": rows})
    for in_channels, flagged in ((1, ["images/two.nii.gz"]), (2, [f"images/case{i}.nii.gz" for i in (1, 2, 3)])):
        problems = [p for p in verify_datalist(path, kind="segmentation", in_channels=in_channels) if "channel" in p]
        assert [p.split("] ")[1].split(":")[0] for p in problems] == flagged, problems
        found = 3 - in_channels  # the 2-channel file is flagged by 1, the 1-channel ones by 2
        assert all(f"expected {in_channels} image channel(s) (--in_channels), found {found}" in p for p in problems)
