"""CT-CLIP's evaluation protocol (issue #28): the threshold rule, the weighted F1, the retrieval scores, the prompt
pair, and the handlers' files with CT-CLIP's columns."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from custom.evaluation.ct_clip_protocol import (
    accuracy,
    ct_clip_classification,
    ct_clip_threshold,
    precision,
    report_to_volume_recall,
    volume_to_volume_map,
    weighted_f1,
)
from custom.evaluation.zero_shot import load_prompt_set


def test_threshold_is_the_grid_point_nearest_the_roc_corner():
    rng = np.random.default_rng(0)
    truth = rng.random(200) < 0.3
    score = np.clip(truth * 0.25 + rng.random(200) * 0.75, 0, 1)
    best, best_distance = None, math.inf
    for t in np.linspace(0, 1, 100):  # CT-CLIP's loop: '<=' keeps the last of equal distances
        predicted = score > t
        tpr = (predicted & truth).sum() / truth.sum()
        fpr = (predicted & ~truth).sum() / (~truth).sum()
        distance = math.sqrt((1 - tpr) ** 2 + fpr**2)
        if distance <= best_distance:
            best, best_distance = t, distance
    assert ct_clip_threshold(truth, score) == pytest.approx(best)
    assert math.isnan(ct_clip_threshold(np.zeros(5), np.linspace(0, 1, 5)))


def test_weighted_f1_accuracy_precision_by_hand():
    truth = np.array([1, 1, 0, 0, 0, 0])
    predicted = np.array([1, 0, 1, 0, 0, 0])
    # class 1: tp 1, fp 1, fn 1 -> F1 0.5 (support 2); class 0: tp 3, fp 1, fn 1 -> F1 0.75 (support 4)
    assert weighted_f1(truth, predicted) == pytest.approx((0.5 * 2 + 0.75 * 4) / 6)
    assert accuracy(truth, predicted) == pytest.approx(4 / 6)
    assert precision(truth, predicted) == pytest.approx(0.5)
    assert precision(truth, np.zeros(6)) == 0.0


def test_classification_report_has_the_four_columns_with_patient_intervals():
    rng = np.random.default_rng(1)
    truth = (rng.random((60, 3)) < 0.4).astype(float)
    truth[:, 2] = 0  # a class without positives: no threshold, out of the macro
    score = np.clip(truth * 0.3 + rng.random((60, 3)) * 0.7, 0, 1)
    patients = [f"p{i // 2}" for i in range(60)]
    report = ct_clip_classification(truth, score, ["a", "b", "c"], patients, n_bootstrap=50)
    assert report["macro"]["classes_scored"] == 2 and report["bootstrap"]["unit"] == "patient"
    for metric in ("auroc", "f1", "accuracy", "precision"):
        low, high = report["macro"][f"{metric}_ci"]
        assert low <= report["macro"][metric] <= high
        assert report["macro"][metric] == pytest.approx(np.mean([e[metric] for e in report["per_class"][:2]]))
    assert math.isnan(report["per_class"][2]["auroc"])


def test_report_to_volume_recall_counts_the_true_volume_in_the_top_k():
    images = torch.eye(6)
    texts = images[[0, 1, 2, 3, 5, 4]]  # reports 4 and 5 point at each other's volume
    recall = report_to_volume_recall(images, texts, ks=(1, 2, 10))
    assert recall["report_to_volume_recall@1"] == pytest.approx(4 / 6)
    assert recall["report_to_volume_recall@2"] == pytest.approx(4 / 6)  # ties count against the query
    assert recall["report_to_volume_recall@10"] == 1.0 and recall["report_to_volume_recall@10_chance"] == 1.0


def test_volume_to_volume_map_scores_label_overlap_of_the_nearest_labelled_volumes():
    images = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = [[1, 0], [1, 1], [0, 1], [0, 0]]  # the last volume has no label: never in the gallery
    result = volume_to_volume_map(images, labels, ks=(1, 2))
    # query 0: top-1 itself (1.0); query 1: itself (1.0); query 2: itself (1.0); query 3 (no labels): 0
    assert result["volume_to_volume_map@1"] == pytest.approx(3 / 4)
    # top-2: q0 {itself 1, vol1 1/2}, q1 {itself 1, vol0 1/2}, q2 {itself 1, vol1 1/2}, q3 {0, 0}
    assert result["volume_to_volume_map@2"] == pytest.approx((0.75 + 0.75 + 0.75 + 0) / 4)
    excluded = volume_to_volume_map(images, labels, ks=(1,), exclude_query=True)
    assert excluded["volume_to_volume_map@1"] == pytest.approx((0.5 + 0.5 + 0.5 + 0) / 4)
    assert result["volume_to_volume_gallery"] == 3.0


def test_ct_clip_prompt_pair():
    prompts = load_prompt_set("ct_clip_v1.json", ["Lung nodule", "Emphysema"])
    assert prompts.prompts["Lung nodule"] == (["Lung nodule is present."], ["Lung nodule is not present."])


def test_handlers_write_ct_clip_columns(tmp_path):
    from custom.handlers.ct_clip_report import CTClipRetrieval, CTClipZeroShot

    class Model(torch.nn.Module):
        logit_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))

        def embed_reports(self, texts):
            return torch.tensor([[1.0, 0.0] if "not" not in t else [0.0, 1.0] for t in texts])

    import nibabel as nib

    rows = []
    for i in range(8):
        path = str(tmp_path / f"v{i}.nii.gz")
        nib.save(nib.Nifti1Image(np.full((16, 16, 16), i, dtype=np.int16), np.eye(4)), path)
        rows.append({"image": path, "report": f"report {i}", "label_vector": [i % 2], "patient_id": f"p{i}"})
    engine = Engine(lambda e, b: None)
    engine.network = Model()
    images = torch.tensor([[1.0, 0.1] if i % 2 else [0.1, 1.0] for i in range(8)])
    zero_shot = CTClipZeroShot("ct_clip_v1.json", ["Emphysema"], rows, str(tmp_path), n_bootstrap=20)
    zero_shot.finish(engine, list(range(8)), images, None)
    with open(tmp_path / "ct_clip_zero_shot_per_class.csv", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert [r["class"] for r in table] == ["Emphysema", "macro"]
    assert float(table[0]["auroc"]) == 1.0 and float(table[0]["f1"]) == 1.0
    assert engine.state.metrics["ct_clip_precision"] == 1.0
    retrieval = CTClipRetrieval(rows, str(tmp_path), recall_ks=(1, 5), map_ks=(1,))
    retrieval.finish(engine, list(range(8)), images, images)
    metrics = json.loads((tmp_path / "ct_clip_retrieval_metrics.json").read_text())
    assert {"report_to_volume_recall@5", "volume_to_volume_map@1", "volume_to_volume_map@1_chance"} <= set(metrics)
