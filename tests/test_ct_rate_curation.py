"""CT-RATE and BIMCV-R curation on their miniatures (issue #28): layout, official split, header repair from the
metadata, reconstructions, resuming, the labeler's coverage and the refusal of label affinity."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest
from conftest import folder_tree

from custom.data.integrity import verify_datalist
from t3d_tools.curation.bimcv_r.curate import curate as curate_bimcv_r
from t3d_tools.curation.bimcv_r.miniature import make_miniature as make_bimcv_r
from t3d_tools.curation.ct_rate.curate import curate as curate_ct_rate
from t3d_tools.curation.ct_rate.curate import report_text
from t3d_tools.curation.ct_rate.layout import CT_RATE_LABELS
from t3d_tools.curation.ct_rate.miniature import make_miniature as make_ct_rate


@pytest.fixture(scope="module")
def ct_rate_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("ct_rate") / "dataset")
    make_ct_rate(root, train_patients=6, valid_patients=3, seed=0)
    return root


def _load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def test_ct_rate_keeps_the_official_split_and_repairs_blank_headers(ct_rate_root, tmp_path):
    out = str(tmp_path / "out")
    summary = curate_ct_rate(ct_rate_root, out, progress=False)
    pairs = _load(os.path.join(out, "pairs_datalist.json"))
    assert pairs["finding_names"] == list(CT_RATE_LABELS)
    assert {r["patient_id"].split("_")[0] for r in pairs["training"]} == {"train"}
    assert {r["patient_id"].split("_")[0] for r in pairs["validation"]} == {"valid"}
    # one reconstruction per study, the first: 6 train patients have 8 scans (pid % 3 == 2 has two), valid 3 -> 4
    assert summary["rows"] == {"training": 8, "validation": 4}
    assert all(r["reconstruction"] == 1 for split in ("training", "validation") for r in pairs[split])
    assert len({r["study_id"] for r in pairs["training"]}) == 8
    train_row = pairs["training"][0]
    assert train_row["header"].startswith("rebuilt from metadata")
    repaired = nib.load(os.path.join(out, train_row["image"]))
    source = nib.load(os.path.join(ct_rate_root, "train", train_row["patient_id"], train_row["study_id"],
                                   train_row["volume_name"]))  # fmt: skip
    assert np.allclose(source.header.get_zooms(), 1.0)  # the quirk the miniature mirrors
    assert np.allclose(repaired.header.get_zooms(), (6.0, 6.0, 6.0))  # from XYSpacing / ZSpacing
    stored, hu = np.asanyarray(source.dataobj), np.asanyarray(repaired.dataobj)
    assert stored.min() >= 0 and hu.min() == stored.min() - 1024  # RescaleIntercept applied once
    valid_row = pairs["validation"][0]
    assert valid_row["header"].startswith("header as downloaded")
    assert valid_row["image"].startswith("..")  # the downloaded file itself, not a copy
    assert "Not given." not in " ".join(r["report"] for r in pairs["training"])
    assert verify_datalist(os.path.join(out, "pairs_datalist.json")) == []
    assert verify_datalist(os.path.join(out, "classification_datalist.json")) == []
    assert _load(os.path.join(out, "label_set.json"))["class_names"] == list(CT_RATE_LABELS)


def test_ct_rate_all_reconstructions_share_the_study_and_patient(ct_rate_root, tmp_path):
    out = str(tmp_path / "out")
    curate_ct_rate(ct_rate_root, out, reconstructions="all", progress=False)
    pairs = _load(os.path.join(out, "pairs_datalist.json"))
    studies = {}
    for row in pairs["training"]:
        studies.setdefault(row["study_id"], set()).add(row["reconstruction"])
    assert any(recs == {1, 2} for recs in studies.values())  # pid % 3 == 1 has two reconstructions
    assert verify_datalist(os.path.join(out, "pairs_datalist.json")) == []


def test_ct_rate_rerun_and_interrupted_run_redo_nothing_finished(ct_rate_root, tmp_path):
    out = str(tmp_path / "out")
    curate_ct_rate(ct_rate_root, out, progress=False)
    log = os.path.join(out, "cache", "volumes.jsonl")
    with open(log, encoding="utf-8") as f:
        lines = f.readlines()
    before = folder_tree(out)
    assert curate_ct_rate(ct_rate_root, out, progress=False)["written"] == []
    assert folder_tree(out) == before  # nothing recomputed, nothing rewritten
    # an interruption: only the first three volumes logged (the last line cut short), their copies on disk
    with open(log, "w", encoding="utf-8") as f:
        f.writelines(lines[:3] + [lines[3][:20]])
    logged = {json.loads(line)["name"]: json.loads(line) for line in lines[:3]}
    mtimes = {n: os.stat(r["image"]).st_mtime_ns for n, r in logged.items() if "image" in r}
    curate_ct_rate(ct_rate_root, out, progress=False)
    with open(log, encoding="utf-8") as f:
        redone = [json.loads(line)["name"] for line in f.readlines()[4:]]
    assert not set(redone) & set(logged) and len(redone) == len(lines) - 3
    assert {n: os.stat(logged[n]["image"]).st_mtime_ns for n in mtimes} == mtimes


def test_ct_rate_report_text_drops_placeholders():
    row = {"Findings_EN": "  Nodule.\n", "Impressions_EN": "Not given.", "X": "y"}
    assert report_text(row, ["Findings_EN", "Impressions_EN"]) == "Nodule."


@pytest.fixture(scope="module")
def bimcv_r_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("bimcv_r"))
    make_bimcv_r(root, patients=10, seed=0)
    return root


def test_bimcv_r_excludes_the_release_quirks_and_measures_coverage(bimcv_r_root, tmp_path):
    out = str(tmp_path / "out")
    summary = curate_bimcv_r(bimcv_r_root, out, min_positive=2, val_fraction=0.2, test_fraction=0.2, progress=False)
    with open(os.path.join(out, "exclusions.tsv"), encoding="utf-8") as f:
        reasons = {line.split("\t")[0]: line.split("\t")[4] for line in f.read().splitlines()[1:]}
    assert reasons == {
        "sub-S1001_ses-E2001": "image-report id mismatch",
        "sub-S1002_ses-E2002": "implausible slice spacing",
        "sub-S9000_ses-E9000": "no report",
    }
    assert summary["studies"] == 8
    coverage = _load(os.path.join(out, "stats.json"))["labeler_coverage"]
    # "aortic elongation" (every third patient) is the one Labels term outside the vocabulary
    assert 0 < coverage["coverage"] < 1 and coverage["uncovered_top"][0][0] == "aortic elongation"
    pairs = _load(os.path.join(out, "pairs_datalist.json"))
    assert pairs["source"]["label_affinity"] == "allowed"
    assert all("label_vector" in r for r in pairs["training"])
    assert verify_datalist(os.path.join(out, "pairs_datalist.json")) == []


def test_bimcv_r_refuses_label_affinity_when_coverage_is_low(bimcv_r_root, tmp_path):
    out = str(tmp_path / "out")
    summary = curate_bimcv_r(
        bimcv_r_root, out, min_positive=2, min_label_coverage=0.99, val_fraction=0.2, test_fraction=0.2, progress=False
    )
    assert summary["label_affinity_refused"]
    pairs = _load(os.path.join(out, "pairs_datalist.json"))
    assert pairs["source"]["label_affinity"].startswith("refused")
    assert not any("label_vector" in r for r in pairs["training"])
    assert all("label_vector" in r for r in pairs["validation"] + pairs["test"])

    from custom.losses.report_affinity import ReportAffinity

    assert ReportAffinity("auto", similarity_threshold=0.5).prepare(pairs["training"]) == "text"
    with pytest.raises(ValueError, match="expected a 'label_vector' in every training row"):
        ReportAffinity("labels").prepare(pairs["training"])
