"""Evaluation figures: ROC curves of the most frequent classes, and a report-to-volume retrieval sheet.

Both write a PNG with matplotlib's non-interactive backend and return its path.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence

import numpy as np

from custom.evaluation.classification_metrics import roc_auc, roc_curve

__all__ = ["plot_roc_curves", "mid_slice", "plot_retrieval_sheet"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc_curves(
    y_true: np.ndarray, y_score: np.ndarray, class_names: Sequence[str], path: str, top_k: int = 5, title: str = ""
) -> str:
    """ROC curves of the ``top_k`` classes with most positives (classes without both outcomes are skipped and listed
    in the legend title), with the chance diagonal."""
    plt = _pyplot()
    y_true, y_score = np.asarray(y_true), np.asarray(y_score)
    positives = (y_true > 0.5).sum(0)
    order = [int(c) for c in np.argsort(-positives, kind="stable") if 0 < positives[c] < y_true.shape[0]][:top_k]
    figure, axis = plt.subplots(figsize=(5, 5))
    for c in order:
        fpr, tpr, _ = roc_curve(y_true[:, c], y_score[:, c])
        axis.plot(
            fpr,
            tpr,
            label=f"{class_names[c]} (n+={int(positives[c])}, AUROC {roc_auc(y_true[:, c], y_score[:, c]):.2f})",
        )
    axis.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="chance")
    unscored = [class_names[c] for c in range(len(class_names)) if positives[c] in (0, y_true.shape[0])]
    axis.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01), title=title)
    legend_title = f"not scorable (one outcome only): {len(unscored)}" if unscored else None
    axis.legend(loc="lower right", fontsize=7, title=legend_title, title_fontsize=7)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def mid_slice(volume: np.ndarray) -> np.ndarray:
    """The axial (last axis) middle slice of a ``(X, Y, Z)`` volume, transposed for display (anterior up)."""
    volume = np.asarray(volume)
    return np.flipud(volume[:, :, volume.shape[2] // 2].T)


def plot_retrieval_sheet(
    queries: Sequence[str],
    ranked: Sequence[Sequence[int]],
    true_index: Sequence[int],
    true_rank: Sequence[int],
    thumbnails: Sequence[np.ndarray | None],
    path: str,
    top_k: int = 3,
    title: str = "report -> volume retrieval",
) -> str:
    """One row per query report: the report text, its ``top_k`` retrieved volumes as mid-slice thumbnails
    (``thumbnails[i]`` is volume i's 2D slice), and a last column with the true volume and its rank. A retrieved
    thumbnail that is the true volume is framed in green and titled TRUE."""
    plt = _pyplot()
    rows = len(queries)
    figure, axes = plt.subplots(rows, top_k + 2, figsize=(2.2 * (top_k + 2) + 1.0, 2.3 * rows), squeeze=False)
    for r, (query, order, truth, rank) in enumerate(zip(queries, ranked, true_index, true_rank)):
        text_axis = axes[r][0]
        text_axis.axis("off")
        text_axis.text(0, 0.5, "\n".join(textwrap.wrap(query, 30)[:9]), fontsize=6, va="center")
        columns = [(k, index) for k, index in enumerate(list(order)[:top_k])] + [(None, truth)]
        for column, (k, index) in enumerate(columns, start=1):
            axis = axes[r][column]
            axis.set_xticks([])
            axis.set_yticks([])
            axis.imshow(thumbnails[index], cmap="gray")
            hit = index == truth
            label = (
                f"true volume {index}, rank {rank}"
                if k is None
                else f"#{k + 1}: volume {index}" + (" TRUE" if hit else "")
            )
            axis.set_title(label, fontsize=7, color="green" if hit else "black")
            for spine in axis.spines.values():
                spine.set_edgecolor("green" if hit else "lightgray")
                spine.set_linewidth(4 if hit else 1)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
