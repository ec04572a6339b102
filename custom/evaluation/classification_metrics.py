"""Multi-label classification metrics: per-class and macro AUROC / AUPRC, F1 at a chosen threshold, bootstrap CIs.

Conventions (each checked against hand-computed cases in ``tests/test_cls_metrics.py``):

- AUROC is the Mann-Whitney probability that a random positive scores above a random negative, ties counting one
  half (average ranks), so a constant score gives exactly 0.5 and a perfect ranking 1.0.
- AUPRC is average precision, ``sum_k (R_k - R_{k-1}) P_k`` over the distinct score thresholds (tied scores enter
  together, as in scikit-learn), so it cannot be inflated by the order of tied items.
- A class with no positives (or no negatives) in a split has undefined AUROC / AUPRC: it is **reported** (``nan`` plus
  a note, its positive count 0) and left out of the macro means, whose ``classes_scored`` says how many classes
  entered. Nothing is dropped silently.
- F1 predicts positive when ``score >= threshold``. :func:`best_f1_threshold` picks the threshold on one split
  (validation); :func:`classification_report` applies thresholds chosen elsewhere, or chooses them on the same
  split when none are given and says so (``threshold_source``).
- Bootstrap confidence intervals resample **patients** with replacement (all of a drawn patient's studies enter
  together), ``n_bootstrap`` times with a fixed seed, when patient ids are given; without them each study is its own
  unit, which is too narrow when patients have several studies (their studies are not independent). Resamples where
  a metric is undefined are skipped; the percentile interval is reported, with its unit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from custom.errors import DataError

__all__ = [
    "roc_auc",
    "average_precision",
    "roc_curve",
    "f1_at_threshold",
    "best_f1_threshold",
    "bootstrap_ci",
    "check_label_matrix",
    "classification_report",
]


def _as_pair(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    y_score = np.asarray(y_score, dtype=np.float64).reshape(-1)
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true / y_score: expected the same length, found {y_true.shape[0]} and {y_score.shape[0]}")
    return y_true > 0.5, y_score


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    return (upper - (counts - 1) / 2.0)[inverse]


def roc_auc(y_true, y_score) -> float:
    """Area under the ROC curve; ``nan`` when the labels hold only one class."""
    positive, score = _as_pair(y_true, y_score)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _distinct_threshold_counts(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores (descending) and the cumulative true / false positives when predicting ``score >= t``."""
    order = np.argsort(-score, kind="mergesort")
    score, positive = score[order], positive[order]
    last_of_group = np.r_[np.nonzero(np.diff(score))[0], score.size - 1]
    tps = np.cumsum(positive)[last_of_group]
    fps = (last_of_group + 1) - tps
    return score[last_of_group], tps.astype(np.float64), fps.astype(np.float64)


def average_precision(y_true, y_score) -> float:
    """Average precision (area under the precision-recall curve, step form); ``nan`` without positives."""
    positive, score = _as_pair(y_true, y_score)
    n_pos = int(positive.sum())
    if n_pos == 0 or positive.size == 0:
        return float("nan")
    _, tps, fps = _distinct_threshold_counts(positive, score)
    precision = tps / (tps + fps)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_curve(y_true, y_score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` starting at (0, 0) (threshold +inf); empty arrays when a class is missing."""
    positive, score = _as_pair(y_true, y_score)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    thresholds, tps, fps = _distinct_threshold_counts(positive, score)
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos], np.r_[np.inf, thresholds]


def f1_at_threshold(y_true, y_score, threshold: float) -> float:
    """F1 of ``score >= threshold``; 0 when there are no positives and nothing is predicted is reported as ``nan``."""
    positive, score = _as_pair(y_true, y_score)
    predicted = score >= threshold
    tp = float(np.sum(predicted & positive))
    denominator = float(predicted.sum() + positive.sum())
    if denominator == 0:
        return float("nan")
    return 2.0 * tp / denominator


def best_f1_threshold(y_true, y_score, default: float = 0.5) -> float:
    """The score threshold with the highest F1 on this split (the largest such threshold on ties);
    ``default`` when the split has no positives (F1 is undefined there)."""
    positive, score = _as_pair(y_true, y_score)
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float(default)
    thresholds, tps, fps = _distinct_threshold_counts(positive, score)
    f1 = 2 * tps / (tps + fps + n_pos)
    return float(thresholds[int(np.argmax(f1))])  # argmax takes the first (highest) threshold of equal F1


def bootstrap_ci(
    y_true: np.ndarray,
    y_score: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    groups: Sequence[str] | None = None,
) -> tuple[float, float]:
    """Percentile interval of ``metric`` over resamples of ``N`` rows (studies; arrays may be 1D or ``(N, C)``).

    ``groups`` (``N`` patient ids): resample the ``G`` distinct patients, ``G`` draws with replacement, each draw
    bringing all its rows (a cluster bootstrap); without it every row is its own group. With one row per patient the
    two give the same interval. ``(nan, nan)`` when fewer than 10 resamples give a defined value."""
    y_true, y_score = np.asarray(y_true), np.asarray(y_score)
    rng = np.random.default_rng(seed)
    count = y_true.shape[0]
    if groups is None:
        members = [np.array([row]) for row in range(count)]
    else:
        if len(groups) != count:
            raise ValueError(f"groups: expected one patient id per row ({count}), found {len(groups)}")
        _, first_rows, inverse = np.unique(np.asarray(groups, dtype=str), return_index=True, return_inverse=True)
        # groups in order of first appearance, so one row per patient draws exactly as the row bootstrap does
        order = np.argsort(first_rows)
        members = [np.flatnonzero(inverse == g) for g in order]
    values = []
    for _ in range(int(n_bootstrap)):
        drawn = rng.integers(0, len(members), size=len(members))
        rows = np.concatenate([members[g] for g in drawn])
        value = metric(y_true[rows], y_score[rows])
        if np.isfinite(value):
            values.append(value)
    if len(values) < 10:
        return float("nan"), float("nan")
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def check_label_matrix(
    y_true, y_score, class_names: Sequence[str], source: str = "labels"
) -> tuple[np.ndarray, np.ndarray]:
    """``(N, C)`` float arrays; one-line :class:`DataError` when a shape does not match ``len(class_names)``."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_score = np.asarray(y_score, dtype=np.float64)
    count = len(class_names)
    for name, array in (("label", y_true), ("prediction", y_score)):
        if array.ndim != 2 or array.shape[1] != count:
            raise DataError(
                f"{source}: expected {name} vectors of length {count} (one per class), found shape {tuple(array.shape)}"
            )
    if y_true.shape[0] != y_score.shape[0]:
        raise DataError(
            f"{source}: expected one prediction per label row, found {y_score.shape[0]} predictions for "
            f"{y_true.shape[0]} rows"
        )
    if y_true.shape[0] == 0:
        raise DataError(f"{source}: expected at least one study to score, found none")
    return y_true, y_score


def _macro(metric: Callable) -> Callable[[np.ndarray, np.ndarray], float]:
    def macro(y_true: np.ndarray, y_score: np.ndarray) -> float:
        values = [metric(y_true[:, c], y_score[:, c]) for c in range(y_true.shape[1])]
        values = [v for v in values if np.isfinite(v)]
        return float(np.mean(values)) if values else float("nan")

    return macro


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def classification_report(
    y_true,
    y_score,
    class_names: Sequence[str],
    thresholds: Sequence[float] | None = None,
    threshold_source: str | None = None,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    source: str = "labels",
    patient_ids: Sequence[str] | None = None,
) -> dict:
    """Everything an evaluation reports, as plain JSON-ready values.

    Returns ``{"macro": {...}, "per_class": [...], "classes_without_positives": [...], "thresholds": [...],
    "threshold_source": str, "studies": N, "bootstrap": {...}}``. Per class: ``positives``, ``negatives``,
    ``prevalence``, ``auroc`` (+ ``auroc_ci``), ``auprc`` (+ ``auprc_ci``), ``threshold``, ``f1``, ``note``.
    Macro values average the classes where the metric is defined (``classes_scored``). ``patient_ids`` (one per
    study) make the bootstrap resample patients (``bootstrap.unit``: ``"patient"``), else studies.
    """
    y_true, y_score = check_label_matrix(y_true, y_score, class_names, source)
    if patient_ids is not None and len(patient_ids) != y_true.shape[0]:
        raise DataError(f"{source}: expected one patient id per study ({y_true.shape[0]}), found {len(patient_ids)}")
    resample = {"n_bootstrap": n_bootstrap, "confidence": confidence, "seed": seed, "groups": patient_ids}
    count = len(class_names)
    if thresholds is None:
        thresholds = [best_f1_threshold(y_true[:, c], y_score[:, c]) for c in range(count)]
        threshold_source = threshold_source or "chosen on this split (F1-maximising; optimistic)"
    elif len(thresholds) != count:
        raise DataError(f"{source}: expected {count} thresholds (one per class), found {len(thresholds)}")
    per_class = []
    for c, name in enumerate(class_names):
        truth, score = y_true[:, c], y_score[:, c]
        positives = int((truth > 0.5).sum())
        entry = {
            "class": name,
            "positives": positives,
            "negatives": int(truth.size - positives),
            "prevalence": positives / truth.size,
            "auroc": roc_auc(truth, score),
            "auprc": average_precision(truth, score),
            "threshold": float(thresholds[c]),
            "f1": f1_at_threshold(truth, score, thresholds[c]),
            "note": "",
        }
        if positives == 0:
            entry["note"] = "no positives in this split: AUROC/AUPRC undefined, not in the macro means"
        elif positives == truth.size:
            entry["note"] = "no negatives in this split: AUROC undefined, not in the macro AUROC"
        if n_bootstrap:
            entry["auroc_ci"] = list(bootstrap_ci(truth, score, roc_auc, **resample))
            entry["auprc_ci"] = list(bootstrap_ci(truth, score, average_precision, **resample))
        per_class.append(entry)
    macro = {
        "auroc": _nanmean([e["auroc"] for e in per_class]),
        "auprc": _nanmean([e["auprc"] for e in per_class]),
        "f1": _nanmean([e["f1"] for e in per_class]),
        "classes_scored": int(sum(np.isfinite(e["auroc"]) for e in per_class)),
        "classes": count,
        "chance_auroc": 0.5,
    }
    if n_bootstrap:
        macro["auroc_ci"] = list(bootstrap_ci(y_true, y_score, _macro(roc_auc), **resample))
        macro["auprc_ci"] = list(bootstrap_ci(y_true, y_score, _macro(average_precision), **resample))
    unit = "study" if patient_ids is None else "patient"
    return {
        "studies": int(y_true.shape[0]),
        "patients": None if patient_ids is None else len(set(patient_ids)),
        "macro": macro,
        "per_class": per_class,
        "classes_without_positives": [e["class"] for e in per_class if e["positives"] == 0],
        "thresholds": [float(t) for t in thresholds],
        "threshold_source": threshold_source or "given",
        "bootstrap": {"resamples": int(n_bootstrap), "confidence": confidence, "seed": seed, "unit": unit},
    }
