"""The second synthetic world (custom.data.synthetic_world): determinism, patient-disjoint splits, reports that
agree with the labels, reports that differ between studies with the same findings, and air around the body."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest

from custom.data.classification_datalist import load_classification_split
from custom.data.synthetic_world import ensure_world, make_world, world_report_corpus
from custom.data.world_findings import SUBTLE_FINDINGS, WORLD_FINDINGS, Study, sample_finding, sample_study
from custom.data.world_render import render_study
from custom.data.world_reports import same_findings_bigram_overlap, sentences_naming, write_world_report
from custom.errors import DataError
from custom.evaluation.zero_shot import load_prompt_set

SMALL = {"num_train": 10, "num_val": 4, "num_test": 6, "shape": (24, 24, 20), "spacing": (16.0, 16.0, 18.0)}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> str:
    return make_world(str(tmp_path_factory.mktemp("world")), seed=3, progress=False, **SMALL)


def _load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def test_same_seed_same_world_other_seed_other_world(world, tmp_path):
    again = make_world(str(tmp_path / "again"), seed=3, progress=False, **SMALL)
    other = make_world(str(tmp_path / "other"), seed=4, progress=False, **SMALL)
    assert _load(again) == _load(world)
    assert _load(other)["training"] != _load(world)["training"]
    for row in _load(world)["test"]:
        first = nib.load(os.path.join(os.path.dirname(world), row["image"])).get_fdata()
        second = nib.load(os.path.join(os.path.dirname(again), row["image"])).get_fdata()
        np.testing.assert_array_equal(first, second)


def test_layout_splits_and_keys(world):
    content = _load(world)
    assert content["finding_names"] == list(WORLD_FINDINGS)
    assert content["subtle_findings"] == list(SUBTLE_FINDINGS)
    assert [len(content[s]) for s in ("training", "validation", "test")] == [10, 4, 6]
    patients = [{r["patient_id"] for r in content[s]} for s in ("training", "validation", "test")]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    assert all(set(r) == {"image", "report", "patient_id", "study_id"} for r in content["training"])
    for row in content["validation"] + content["test"]:
        assert row["label_vector"] == [int(n in row["labels"]) for n in WORLD_FINDINGS]
    # the classification datalist labels every split, readable by the classification bundle's loader
    classification = os.path.join(os.path.dirname(world), "classification_datalist.json")
    for split in ("training", "validation", "test"):
        rows = load_classification_split(classification, split, class_names=WORLD_FINDINGS)
        assert len(rows) == len(content[split]) and all(len(r["label"]) == len(WORLD_FINDINGS) for r in rows)


def test_ensure_world_reuses_and_refuses_other_arguments(world):
    out_dir = os.path.dirname(world)
    assert ensure_world(out_dir, seed=3, progress=False, **SMALL) == world
    with pytest.raises(DataError, match="expected a world made with"):
        ensure_world(out_dir, seed=4, progress=False, **SMALL)


def test_air_around_the_body_and_ct_intensities(world):
    content = _load(world)
    for row in content["training"]:
        image = nib.load(os.path.join(os.path.dirname(world), row["image"])).get_fdata()
        border = np.concatenate([image[0].ravel(), image[-1].ravel(), image[:, 0].ravel(), image[:, -1].ravel()])
        assert np.median(border) < -900  # air all around the body (left-right and anterior-posterior borders)
        body = image > -500
        assert 0.1 < body.mean() < 0.7  # a body that fills part of the field of view
        assert image.min() >= -1024 and image.max() > 100  # HU: air, then bone / enhanced vessels above 100


def test_body_size_position_phase_kernel_noise_vary():
    rng = np.random.default_rng(0)
    nuisances = [sample_study(rng).nuisance for _ in range(200)]
    assert len({n.phase for n in nuisances}) == 3 and len({n.kernel for n in nuisances}) == 3
    assert np.ptp([n.habitus.radius_lr for n in nuisances]) > 0.15
    assert np.ptp([n.offset[0] for n in nuisances]) > 0.1 and np.ptp([n.noise_hu for n in nuisances]) > 15


def _studies_and_reports(count: int, seed: int):
    rng = np.random.default_rng(seed)
    studies = [sample_study(rng) for _ in range(count)]
    return studies, [write_world_report(s, rng) for s in studies]


def test_reports_name_present_findings_and_never_assert_absent_ones():
    studies, reports = _studies_and_reports(400, seed=0)
    for study, report in zip(studies, reports):
        assert 100 <= len(report.split()) <= 300, report
        for name in WORLD_FINDINGS:
            mentions = sentences_naming(report, name)
            if name in study.names():
                assert any(not negated for _, negated in mentions), (name, report)
            else:
                assert all(negated for _, negated in mentions), (name, mentions)


def test_same_findings_reports_share_under_half_their_bigrams():
    """Mean Jaccard and overlap coefficient of word-bigram sets over all pairs of reports with the same label vector
    (seeded draws)."""
    studies, reports = _studies_and_reports(500, seed=1)
    overlap = same_findings_bigram_overlap(reports, [s.label_vector() for s in studies])
    assert overlap["pairs"] > 1000
    assert overlap["mean_jaccard"] < 0.5 and overlap["mean_overlap_coefficient"] < 0.5
    # the measure itself: a report and its copy overlap fully, a report and an unrelated text not at all
    assert same_findings_bigram_overlap([reports[0], reports[0]], [[0], [0]])["mean_jaccard"] == 1.0
    assert same_findings_bigram_overlap([reports[0], "alpha beta gamma"], [[0], [0]])["mean_jaccard"] == 0.0
    # ... while two renderings of the SAME study's report from one rng state are identical (determinism)
    study = studies[0]
    assert write_world_report(study, np.random.default_rng(7)) == write_world_report(study, np.random.default_rng(7))


def test_every_subtle_finding_changes_the_pixels_inside_the_body():
    """Rendering one study with and without each subtle finding (same seed): the pixels differ, only in the body."""
    nuisance = sample_study(np.random.default_rng(5)).nuisance
    without, organs = render_study(Study([], nuisance), (48, 48, 40), (8.0, 8.0, 9.0), seed=1)
    for index, name in enumerate(SUBTLE_FINDINGS):
        finding = sample_finding(name, np.random.default_rng(index))
        with_finding, _ = render_study(Study([finding], nuisance), (48, 48, 40), (8.0, 8.0, 9.0), seed=1)
        changed = with_finding != without
        assert changed.any(), name
        assert not (changed & ~_dilated(organs > 0, 2)).any(), name  # in organs, up to the kernel's blur


def _dilated(mask: np.ndarray, radius: int) -> np.ndarray:
    out = mask.copy()
    for axis in range(mask.ndim):
        grown = out.copy()
        for shift in range(1, radius + 1):
            grown |= np.roll(out, shift, axis) | np.roll(out, -shift, axis)
        out = grown
    return out


def test_prompt_file_covers_the_world_classes():
    prompts = load_prompt_set("world_v2.json", WORLD_FINDINGS)
    assert prompts.from_defaults == [] and prompts.version.startswith("2.")


def test_report_corpus_is_seeded():
    assert world_report_corpus(5, seed=1) == world_report_corpus(5, seed=1) != world_report_corpus(5, seed=2)
