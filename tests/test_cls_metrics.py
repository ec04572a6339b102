"""Classification metrics against hand-computed cases, the classification datalist checks, and the imbalance loss.

Every expected number below is worked out by hand in the comment next to it (or is a property that holds exactly:
a perfect ranking, an all-tied score, a class with no positives).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from custom.data.classification_datalist import load_classification_split, read_class_names
from custom.data.label_fractions import label_fraction_subsets
from custom.errors import DataError
from custom.evaluation.classification_metrics import (
    average_precision,
    best_f1_threshold,
    bootstrap_ci,
    check_label_matrix,
    classification_report,
    f1_at_threshold,
    roc_auc,
    roc_curve,
)
from custom.losses.imbalanced_bce import ImbalancedBCELoss, positive_weights


# ---------------------------------------------------------------- AUROC / AUPRC / ROC
def test_auroc_perfect_reversed_and_constant():
    y = [0, 0, 1, 1, 0, 1]
    s = [0.1, 0.2, 0.8, 0.9, 0.3, 0.7]
    assert roc_auc(y, s) == 1.0
    assert roc_auc(y, [-v for v in s]) == 0.0
    assert roc_auc(y, [0.5] * 6) == 0.5  # every positive-negative pair tied: each counts one half


def test_auroc_hand_computed_with_and_without_ties():
    # positives score 0.35, 0.8; negatives 0.1, 0.4: pairs (0.35>0.1) (0.35<0.4) (0.8>0.1) (0.8>0.4) -> 3/4
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # positives 0.5, 0.9; negatives 0.5, 0.2: (0.5=0.5 -> 1/2) (0.5>0.2) (0.9>0.5) (0.9>0.2) -> 3.5/4
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875)


def test_average_precision_hand_computed_with_and_without_ties():
    # ranking 0.8(+) 0.4(-) 0.35(+) 0.1(-): recall steps 1/2 at precision 1, 1/2 at precision 2/3 -> 5/6
    assert average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(5 / 6)
    # tied top pair (one +, one -) enters together: P=1/2 at R=1/2, then P=2/3 at R=1 -> 1/4 + 1/3
    assert average_precision([1, 0, 1], [0.5, 0.5, 0.2]) == pytest.approx(0.25 + 1 / 3)
    assert average_precision([1, 0, 1], [0.9, 0.1, 0.8]) == 1.0  # perfect classifier


def test_metrics_of_a_class_without_positives_are_undefined_not_zero():
    assert math.isnan(roc_auc([0, 0, 0], [0.1, 0.5, 0.9]))
    assert math.isnan(average_precision([0, 0, 0], [0.1, 0.5, 0.9]))
    assert math.isnan(roc_auc([1, 1], [0.1, 0.5]))  # no negatives either
    fpr, tpr, thresholds = roc_curve([0, 0, 0], [0.1, 0.5, 0.9])
    assert fpr.size == tpr.size == thresholds.size == 0


def test_roc_curve_points():
    fpr, tpr, thresholds = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1.0, 1.0])
    assert thresholds[0] == np.inf and list(thresholds[1:]) == [0.8, 0.4, 0.35, 0.1]


# ---------------------------------------------------------------- F1 and thresholds
def test_best_f1_threshold_hand_computed():
    y, s = [0, 1, 1, 0, 1], [0.1, 0.6, 0.4, 0.5, 0.9]
    # t=0.9: 2*1/(1+3)=0.5; t=0.6: 4/5; t=0.5: 4/6; t=0.4: 6/7 (best); t=0.1: 6/8
    assert best_f1_threshold(y, s) == 0.4
    assert f1_at_threshold(y, s, 0.4) == pytest.approx(6 / 7)
    assert f1_at_threshold(y, s, 0.55) == pytest.approx(4 / 5)  # a threshold chosen elsewhere is applied as is
    assert best_f1_threshold([0, 0], [0.2, 0.3], default=0.5) == 0.5  # no positives: the default
    assert math.isnan(f1_at_threshold([0, 0], [0.2, 0.3], 0.5))  # nothing to find and nothing predicted


# ---------------------------------------------------------------- bootstrap
def test_bootstrap_ci_perfect_classifier_and_determinism():
    y = np.array([0, 1] * 10)
    assert bootstrap_ci(y, y * 0.8 + 0.1, roc_auc, n_bootstrap=200) == (1.0, 1.0)
    rng = np.random.default_rng(0)
    s = y * 0.3 + rng.random(20)
    first = bootstrap_ci(y, s, roc_auc, n_bootstrap=200, seed=1)
    assert first == bootstrap_ci(y, s, roc_auc, n_bootstrap=200, seed=1)
    assert first[0] <= roc_auc(y, s) <= first[1]
    undefined = bootstrap_ci(np.zeros(5), np.arange(5.0), roc_auc, n_bootstrap=50)  # no positives in any resample
    assert all(math.isnan(v) for v in undefined)


def test_bootstrap_over_patients_is_the_study_bootstrap_of_one_study_each_and_wider_with_repeat_studies():
    """BIMCV patients have several studies, which are not independent: resampling studies treats 3 studies of one
    patient as 3 pieces of evidence. Here every patient's studies are exact copies (the extreme case), so resampling
    patients must give exactly the interval of the de-duplicated set, and resampling studies a narrower one."""
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 20)
    s = y * 0.4 + rng.random(40)
    patients = [f"p{i:02d}" for i in range(40)]
    single = bootstrap_ci(y, s, roc_auc, n_bootstrap=400, seed=3)
    assert bootstrap_ci(y, s, roc_auc, n_bootstrap=400, seed=3, groups=patients) == single  # one study each
    copies = 3
    y3, s3, patients3 = np.repeat(y, copies), np.repeat(s, copies), [p for p in patients for _ in range(copies)]
    by_patient = bootstrap_ci(y3, s3, roc_auc, n_bootstrap=400, seed=3, groups=patients3)
    by_study = bootstrap_ci(y3, s3, roc_auc, n_bootstrap=400, seed=3)
    assert by_patient == pytest.approx(single, abs=1e-12)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(by_study) < 0.75 * width(by_patient), (by_study, by_patient)  # ~1/sqrt(3) as wide
    with pytest.raises(ValueError, match="one patient id per row"):
        bootstrap_ci(y, s, roc_auc, groups=patients[:-1])


def test_report_names_its_bootstrap_unit():
    y = np.array([[0], [1], [1], [0], [1], [0]])
    s = np.array([[0.1], [0.6], [0.4], [0.5], [0.9], [0.3]])
    by_study = classification_report(y, s, ["c"], n_bootstrap=50)
    assert by_study["bootstrap"]["unit"] == "study" and by_study["patients"] is None
    by_patient = classification_report(y, s, ["c"], n_bootstrap=50, patient_ids=["a", "a", "b", "b", "c", "c"])
    assert by_patient["bootstrap"]["unit"] == "patient" and by_patient["patients"] == 3
    with pytest.raises(DataError, match="expected one patient id per study"):
        classification_report(y, s, ["c"], n_bootstrap=50, patient_ids=["a"])


# ---------------------------------------------------------------- the report
def test_report_keeps_a_class_without_positives_and_macro_skips_it():
    names = ["a", "b", "never"]
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    s = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.1], [0.7, 0.6, 0.2], [0.1, 0.3, 0.9]])
    report = classification_report(y, s, names, n_bootstrap=100)
    per_class = {e["class"]: e for e in report["per_class"]}
    assert set(per_class) == set(names)  # reported, not dropped
    assert per_class["never"]["positives"] == 0 and "no positives" in per_class["never"]["note"]
    assert math.isnan(per_class["never"]["auroc"]) and math.isnan(per_class["never"]["auprc"])
    assert report["classes_without_positives"] == ["never"]
    assert per_class["a"]["auroc"] == 1.0 and per_class["b"]["auroc"] == 1.0
    assert report["macro"]["auroc"] == 1.0 and report["macro"]["classes_scored"] == 2
    assert report["macro"]["auroc_ci"] == [1.0, 1.0]
    assert "chosen on this split" in report["threshold_source"]
    json.dumps(report)  # JSON-ready (nan is written as NaN by json)


def test_report_applies_given_thresholds():
    y = np.array([[0], [1], [1], [0], [1]])
    s = np.array([[0.1], [0.6], [0.4], [0.5], [0.9]])
    report = classification_report(y, s, ["c"], thresholds=[0.55], threshold_source="validation", n_bootstrap=0)
    assert report["per_class"][0]["f1"] == pytest.approx(4 / 5)
    assert report["threshold_source"] == "validation" and "auroc_ci" not in report["macro"]


def test_label_matrix_shape_errors_are_one_line():
    with pytest.raises(DataError) as raised:
        check_label_matrix(np.zeros((3, 7)), np.zeros((3, 8)), [f"c{i}" for i in range(8)], source="val split")
    message = str(raised.value)
    assert "\n" not in message and "val split" in message and "length 8" in message and "(3, 7)" in message
    with pytest.raises(DataError, match="at least one study"):
        check_label_matrix(np.zeros((0, 2)), np.zeros((0, 2)), ["a", "b"])


# ---------------------------------------------------------------- classification datalists
def _write_datalist(tmp_path, rows_train, rows_val, names=("x", "y", "z"), key="class_names"):
    for row in rows_train + rows_val:
        (tmp_path / row["image"]).write_bytes(b"not read here")
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({key: list(names), "training": rows_train, "validation": rows_val}))
    return str(path)


def test_datalist_rows_and_class_names(tmp_path):
    rows = [
        {"image": f"v{i}.nii.gz", "label_vector": [i % 2, 0, 1], "patient_id": f"p{i}", "labels": ["z"] * (i + 1)}
        for i in range(4)
    ]
    path = _write_datalist(tmp_path, rows, rows[:1], key="finding_names")
    assert read_class_names(path) == ["x", "y", "z"]
    loaded = load_classification_split(path, "training")
    assert [r["label"] for r in loaded] == [[0.0, 0.0, 1.0], [1.0, 0.0, 1.0]] * 2
    assert set(loaded[0]) == {"image", "label", "patient_id", "study_id"}  # ragged term lists are not carried
    assert loaded[0]["image"] == str(tmp_path / "v0.nii.gz")


def test_datalist_wrong_label_length_names_file_row_key_expected_found(tmp_path):
    rows = [{"image": "a.nii.gz", "label": [1, 0, 1]}, {"image": "b.nii.gz", "label": [1, 0]}]
    path = _write_datalist(tmp_path, rows, rows[:1])
    with pytest.raises(DataError) as raised:
        load_classification_split(path, "training")
    message = str(raised.value)
    assert "\n" not in message
    for part in (path, "training #1", "'label'", "length 3", "found length 2"):
        assert part in message, message


def test_datalist_empty_split_and_class_list_mismatch(tmp_path):
    path = _write_datalist(tmp_path, [{"image": "a.nii.gz", "label": [1, 0, 1]}], [])
    with pytest.raises(DataError, match=r"expected at least one 'validation' row, found an empty split") as raised:
        load_classification_split(path, "validation")
    assert path in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(DataError, match="class_names"):
        load_classification_split(path, "training", class_names=["x", "y"])
    with pytest.raises(DataError, match="expected a 'test' list"):
        load_classification_split(path, "test")


def test_label_fraction_matches_the_curation_rule(tmp_path):
    rows = [
        {"image": f"v{i}.nii.gz", "label": [int(i % 3 == 0), int(i % 5 == 0), 1], "patient_id": f"p{i // 2}"}
        for i in range(40)
    ]
    path = _write_datalist(tmp_path, rows, rows[:1])
    subset = load_classification_split(path, "training", label_fraction=0.1, seed=3)
    full = load_classification_split(path, "training")
    expected = label_fraction_subsets(full, (0.01, 0.1, 1.0), 3, stratify_key="label")[0.1]
    assert [r["image"] for r in subset] == [r["image"] for r in expected]
    assert {r["patient_id"] for r in subset} < {r["patient_id"] for r in full}


# ---------------------------------------------------------------- imbalance loss
def test_positive_weights_and_weighted_bce():
    rows = [{"label": [1, 0, 0]}, {"label": [0, 0, 1]}, {"label": [0, 0, 1]}, {"label": [0, 0, 1]}]
    weights = positive_weights(rows, max_pos_weight=2.0)
    # class 0: 3 negatives / 1 positive = 3, capped at 2; class 1: no positives -> 1; class 2: 1/3
    torch.testing.assert_close(weights, torch.tensor([2.0, 1.0, 1 / 3]))
    logits, target = torch.tensor([[0.3, -1.0, 2.0]]), torch.tensor([[1.0, 0.0, 1.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=weights)
    torch.testing.assert_close(ImbalancedBCELoss(weights)(logits, target), expected)


def test_focal_term_down_weights_easy_examples():
    target = torch.tensor([[1.0, 0.0]])
    easy, hard = torch.tensor([[4.0, -4.0]]), torch.tensor([[-1.0, 1.0]])
    plain, focal = ImbalancedBCELoss(), ImbalancedBCELoss(gamma=2.0)
    assert focal(easy, target) < 0.01 * plain(easy, target)  # (1 - p_t)^2 with p_t ~ 0.98
    assert focal(hard, target) > 0.5 * plain(hard, target)  # p_t ~ 0.27: most of the loss kept
    with pytest.raises(ValueError, match="gamma"):
        ImbalancedBCELoss(gamma=-1)
