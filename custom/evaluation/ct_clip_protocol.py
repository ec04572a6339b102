"""CT-CLIP's evaluation protocol (Hamamci et al., arXiv 2403.17834; code: github.com/ibrahimethemhamamci/CT-CLIP),
so that a T3D run on CT-RATE prints the numbers CT-CLIP's paper reports, in its columns.

Multi-abnormality classification (CT-CLIP ``scripts/zero_shot.py``, ``scripts/bootstrap_values.py``):

- per class ``c`` the prompt pair "``c`` is present." / "``c`` is not present."; the score is the softmax of the two
  image-text logits, the "present" entry (the prompt file ``custom/data/prompts/ct_clip_v1.json`` and
  :func:`custom.evaluation.zero_shot.zero_shot_probabilities`);
- a threshold per class: of ``numpy.linspace(0, 1, 100)``, the one whose (FPR, TPR) is closest to (0, 1), the last
  one on ties (:func:`ct_clip_threshold`);
- AUROC, F1 (scikit-learn's ``average="weighted"`` over the two classes 0 and 1, weighted by support), accuracy and
  precision (of class 1) at that threshold; the paper's table averages them over the 18 classes.
- CT-CLIP's bootstrap script draws resamples but then scores the full set (the resampling lines are commented out),
  so its "bootstrap" has no spread. Here the intervals are real: a patient-level cluster bootstrap
  (:func:`custom.evaluation.classification_metrics.bootstrap_ci`), thresholds kept fixed as in CT-CLIP.

Retrieval (CT-CLIP ``scripts/report_to_volume_new.py``, ``scripts/volume_to_volume_new.py``):

- report -> volume: recall@K, K in (5, 10, 50, 100): the fraction of reports whose own volume is among the K volumes
  with the highest text-image dot product (:func:`report_to_volume_recall`);
- volume -> volume: for each query volume, the K most cosine-similar volumes among those with at least one positive
  label, scored by the mean over the K of ``|A & B| / |A | B|`` of their label sets, averaged over queries
  (CT-CLIP calls it MAP@K, K in (1, 5, 10, 50); :func:`volume_to_volume_map`). The query stays in its own gallery as
  in CT-CLIP (``exclude_query=False``); CT-CLIP's script also keeps one running list across K, so its K > 1 numbers
  mix in the smaller Ks: here each K is scored on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from custom.evaluation.classification_metrics import bootstrap_ci, check_label_matrix, roc_auc
from custom.evaluation.retrieval import retrieval_ranks

__all__ = [
    "CT_CLIP_METRICS",
    "ct_clip_threshold",
    "weighted_f1",
    "accuracy",
    "precision",
    "ct_clip_classification",
    "report_to_volume_recall",
    "volume_to_volume_map",
]

CT_CLIP_METRICS = ("auroc", "f1", "accuracy", "precision")
_GRID = np.linspace(0.0, 1.0, 100)


def ct_clip_threshold(y_true, y_score) -> float:
    """The grid threshold whose ``(FPR, TPR)`` of ``score > t`` is nearest (0, 1) (the last on ties); nan when the
    labels lack positives or negatives (the distance is undefined)."""
    truth, score = np.asarray(y_true) > 0.5, np.asarray(y_score, dtype=np.float64)
    positives, negatives = int(truth.sum()), int((~truth).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    predicted = score[None, :] > _GRID[:, None]  # (thresholds, N)
    tpr = (predicted & truth).sum(axis=1) / positives
    fpr = (predicted & ~truth).sum(axis=1) / negatives
    distance = np.sqrt((1.0 - tpr) ** 2 + fpr**2)
    return float(_GRID[len(distance) - 1 - int(np.argmin(distance[::-1]))])


def _f1(truth: np.ndarray, predicted: np.ndarray, positive: bool) -> float:
    actual, guessed = truth == positive, predicted == positive
    denominator = int(actual.sum() + guessed.sum())
    return 2.0 * int((actual & guessed).sum()) / denominator if denominator else 0.0


def weighted_f1(y_true, predicted) -> float:
    """scikit-learn's ``f1_score(average="weighted")`` for binary labels: the two classes' F1 weighted by support."""
    truth, guess = np.asarray(y_true) > 0.5, np.asarray(predicted) > 0.5
    support = np.array([(~truth).sum(), truth.sum()], dtype=np.float64)
    scores = np.array([_f1(truth, guess, False), _f1(truth, guess, True)])
    return float((scores * support).sum() / support.sum()) if support.sum() else float("nan")


def accuracy(y_true, predicted) -> float:
    return float(np.mean((np.asarray(y_true) > 0.5) == (np.asarray(predicted) > 0.5)))


def precision(y_true, predicted) -> float:
    """Of class 1; 0 when nothing is predicted positive (scikit-learn's ``zero_division`` default)."""
    truth, guess = np.asarray(y_true) > 0.5, np.asarray(predicted) > 0.5
    return float((truth & guess).sum() / guess.sum()) if guess.sum() else 0.0


def _at(metric, threshold: float):
    return lambda truth, score: metric(truth, score > threshold)


def _macro(per_class_metrics):
    def macro(truth: np.ndarray, score: np.ndarray) -> float:
        values = [m(truth[:, c], score[:, c]) for c, m in enumerate(per_class_metrics) if m is not None]
        values = [v for v in values if np.isfinite(v)]
        return float(np.mean(values)) if values else float("nan")

    return macro


def ct_clip_classification(
    y_true,
    y_score,
    class_names: Sequence[str],
    patient_ids: Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """``{"macro": {metric: value, metric_ci: [lo, hi]}, "per_class": [...], "bootstrap": {...}}`` with CT-CLIP's
    four columns (:data:`CT_CLIP_METRICS`). A class without positives or negatives has no threshold: its values are
    nan and it is left out of the macro means (``classes_scored``)."""
    y_true, y_score = check_label_matrix(y_true, y_score, class_names, "ct_clip_classification")
    resample = {"n_bootstrap": n_bootstrap, "confidence": confidence, "seed": seed, "groups": patient_ids}
    per_class, metric_fns = [], {name: [] for name in CT_CLIP_METRICS}
    for c, name in enumerate(class_names):
        truth, score = y_true[:, c], y_score[:, c]
        threshold = ct_clip_threshold(truth, score)
        defined = np.isfinite(threshold)
        fns = {
            "auroc": roc_auc if defined else None,
            "f1": _at(weighted_f1, threshold) if defined else None,
            "accuracy": _at(accuracy, threshold) if defined else None,
            "precision": _at(precision, threshold) if defined else None,
        }
        entry = {"class": name, "positives": int((truth > 0.5).sum()), "threshold": threshold}
        for metric, fn in fns.items():
            metric_fns[metric].append(fn)
            entry[metric] = fn(truth, score) if fn else float("nan")
            if n_bootstrap and fn:
                entry[f"{metric}_ci"] = list(bootstrap_ci(truth, score, fn, **resample))
        per_class.append(entry)
    scored = int(sum(np.isfinite(e["threshold"]) for e in per_class))
    macro: dict = {"classes_scored": scored, "classes": len(per_class)}
    for metric in CT_CLIP_METRICS:
        fn = _macro(metric_fns[metric])
        macro[metric] = fn(y_true, y_score)
        if n_bootstrap:
            macro[f"{metric}_ci"] = list(bootstrap_ci(y_true, y_score, fn, **resample))
    unit = "study" if patient_ids is None else "patient"
    return {
        "studies": int(y_true.shape[0]),
        "patients": None if patient_ids is None else len(set(patient_ids)),
        "macro": macro,
        "per_class": per_class,
        "threshold_rule": "CT-CLIP: nearest (0, 1) on the ROC over numpy.linspace(0, 1, 100), chosen on this split",
        "f1": "weighted over classes 0 and 1 (scikit-learn average='weighted'), as CT-CLIP",
        "bootstrap": {"resamples": int(n_bootstrap), "confidence": confidence, "seed": seed, "unit": unit},
    }


def report_to_volume_recall(
    image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, ks: Sequence[int] = (5, 10, 50, 100)
) -> dict[str, float]:
    """Report ``i`` belongs to volume ``i``; ``report_to_volume_recall@K`` and its chance ``K / N`` (K capped at N)."""
    similarity = text_embeddings.float() @ image_embeddings.float().T  # (reports, volumes)
    ranks = retrieval_ranks(similarity)
    count = similarity.shape[0]
    results: dict[str, float] = {}
    for k in ks:
        results[f"report_to_volume_recall@{k}"] = float((ranks <= k).float().mean())
        results[f"report_to_volume_recall@{k}_chance"] = min(k, count) / count
    return results


def _jaccard(query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """``|A & B| / |A | B|`` of one 0/1 label vector against ``(G, C)`` (0 when both are empty)."""
    both = (gallery & query).sum(axis=1)
    either = (gallery | query).sum(axis=1)
    return np.where(either > 0, both / np.maximum(either, 1), 0.0)


def volume_to_volume_map(
    image_embeddings: torch.Tensor, labels, ks: Sequence[int] = (1, 5, 10, 50), exclude_query: bool = False
) -> dict[str, float]:
    """CT-CLIP's volume -> volume "MAP@K" (module docstring) and, as ``..._chance``, the same score for a gallery
    ranked at random (the mean label similarity of a query to the whole gallery)."""
    images = F.normalize(image_embeddings.float(), dim=-1)
    vectors = np.asarray(labels) > 0.5
    gallery = np.flatnonzero(vectors.any(axis=1))
    results: dict[str, float] = {"volume_to_volume_gallery": float(len(gallery))}
    if len(gallery) == 0:
        return {**results, **{f"volume_to_volume_map@{k}": float("nan") for k in ks}}
    similarity = (images @ images[gallery].T).numpy()  # (queries, gallery)
    if exclude_query:
        for column, row in enumerate(gallery):
            similarity[row, column] = -np.inf
    order = np.argsort(-similarity, axis=1, kind="stable")
    scores = np.stack([_jaccard(vectors[q], vectors[gallery])[order[q]] for q in range(len(vectors))])
    chance = np.mean([_jaccard(vectors[q], vectors[gallery]).mean() for q in range(len(vectors))])
    for k in ks:
        depth = min(k, len(gallery) - (1 if exclude_query else 0))
        results[f"volume_to_volume_map@{k}"] = float(scores[:, : max(depth, 1)].mean())
        results[f"volume_to_volume_map@{k}_chance"] = float(chance)
    return results
