"""Statistics of a curated BIMCV set (``stats.json``: volumes, reports, labels, splits, exclusions, demographics) and
its plots (``stats_volumes.png``, ``stats_reports.png``, ``stats_labels.png``)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from t3d_tools.curation.bimcv.records import SPLITS, CuratedStudy, Exclusion


def _summary(values: Sequence[float]) -> dict:
    if not values:
        return {}
    array = np.asarray(values, dtype=float)
    return {
        "min": float(array.min()),
        "median": float(np.median(array)),
        "mean": round(float(array.mean()), 3),
        "max": float(array.max()),
    }


def _counts(values: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))


def compute_stats(
    studies: list[CuratedStudy],
    exclusions: list[Exclusion],
    split_of: dict[str, str],
    classes: list[str],
    min_positive: int,
    participants: dict[str, dict],
    ehr_results: dict[str, list[str]],
) -> dict:
    """The content of ``stats.json``; ``split_of`` is ``{patient: split}``, ``classes`` the class list."""
    shapes = np.array([s.probe["shape"] for s in studies]).reshape(-1, 3)
    spacings = np.array([s.probe["spacing"] for s in studies]).reshape(-1, 3)
    frequencies = Counter(term for s in studies for term in s.terms)
    per_split = {
        name: {
            "patients": len({s.patient_id for s in studies if split_of[s.patient_id] == name}),
            "studies": sum(split_of[s.patient_id] == name for s in studies),
        }
        for name in SPLITS
    }
    ages = [p["age"] for pid, p in participants.items() if p["age"] is not None and pid in split_of]
    return {
        "patients": len({s.patient_id for s in studies}),
        "studies": len(studies),
        "volumes": len(studies),
        "splits": per_split,
        "exclusions": len(exclusions),
        "exclusions_by_reason": dict(sorted(Counter(e.reason for e in exclusions).items())),
        "shape": {axis: _summary(shapes[:, i].tolist()) for i, axis in enumerate("ijk")},
        "spacing_mm": {axis: _summary(spacings[:, i].tolist()) for i, axis in enumerate("ijk")},
        "report_chars_raw": _summary([s.extra.get("report_chars_raw", len(s.report)) for s in studies]),
        "report_chars_clean": _summary([s.extra.get("report_chars_clean", len(s.report)) for s in studies]),
        "report_words_english": _summary([len(s.report.split()) for s in studies]),
        "label_frequencies": dict(sorted(frequencies.items(), key=lambda kv: (-kv[1], kv[0]))),
        "min_positive": min_positive,
        "classes": len(classes),
        "age": _summary(ages),
        "gender": _counts(p["gender"] for pid, p in participants.items() if pid in split_of and p["gender"]),
        "ehr_test_results": _counts(r for pid, found in ehr_results.items() if pid in split_of for r in found),
    }


def plot_stats(stats: dict, studies: list[CuratedStudy], out: str) -> None:
    """Write the three ``stats_*.png`` plots of ``stats`` (from :func:`compute_stats`) into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].hist([s.probe["shape"][2] for s in studies], bins=20)
    axes[0].set(title="slices per volume", xlabel="slices", ylabel="volumes")
    axes[1].hist([s.probe["spacing"][2] for s in studies], bins=20)
    axes[1].set(title="slice spacing", xlabel="mm", ylabel="volumes")
    figure.tight_layout()
    figure.savefig(os.path.join(out, "stats_volumes.png"), dpi=80)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 3.5))
    raw = [s.extra.get("report_chars_raw", len(s.report)) for s in studies]
    clean = [s.extra.get("report_chars_clean", len(s.report)) for s in studies]
    axis.hist([raw, clean], bins=20, label=["before cleaning", "after cleaning"])
    axis.set(title="report length", xlabel="characters", ylabel="reports")
    axis.legend()
    figure.tight_layout()
    figure.savefig(os.path.join(out, "stats_reports.png"), dpi=80)
    plt.close(figure)

    frequencies = stats["label_frequencies"]
    figure, axis = plt.subplots(figsize=(max(6, 0.25 * len(frequencies)), 4))
    axis.bar(range(len(frequencies)), list(frequencies.values()))
    axis.axhline(stats["min_positive"], color="red", linestyle="--", label=f"min_positive={stats['min_positive']}")
    axis.set_xticks(range(len(frequencies)), list(frequencies), rotation=90, fontsize=7)
    axis.set(title="label frequency (studies)", ylabel="studies")
    axis.legend()
    figure.tight_layout()
    figure.savefig(os.path.join(out, "stats_labels.png"), dpi=80)
    plt.close(figure)
