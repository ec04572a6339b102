"""Macro AUROC of a multi-label evaluator as an ignite metric (the key metric of classification validation).

``update`` takes what ``monai.handlers.from_engine(["pred", "label"])`` gives: per-study ``(C,)`` scores and 0/1
labels. ``compute`` gathers every rank's rows under DDP (uneven shards allowed) and returns
:func:`custom.evaluation.classification_metrics.classification_report`'s macro AUROC (classes without positives are
left out of the mean, never counted as 0.5 or 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
from ignite.metrics import Metric

from custom.evaluation.classification_metrics import classification_report

__all__ = ["gather_rows", "MultiLabelAUROC"]


def gather_rows(rows: list[torch.Tensor]) -> torch.Tensor:
    """Stack ``(C,)`` rows into ``(N, C)`` and, under DDP, concatenate every rank's rows (in rank order)."""
    local = torch.stack([r.detach().float().cpu().reshape(-1) for r in rows]) if rows else torch.zeros(0, 0)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    from monai.utils import evenly_divisible_all_gather

    width = torch.tensor([local.shape[1]], dtype=torch.long)
    dist.all_reduce(width, op=dist.ReduceOp.MAX)
    if local.shape[0] == 0:
        local = torch.zeros(0, int(width))
    return evenly_divisible_all_gather(local, concat=True)


class MultiLabelAUROC(Metric):
    """Macro AUROC over the classes with both positives and negatives; ``nan`` when no class qualifies."""

    def __init__(self, class_names: Sequence[str] | None = None, output_transform=lambda x: x) -> None:
        self.class_names = None if class_names is None else list(class_names)
        super().__init__(output_transform=output_transform)

    def reset(self) -> None:
        self._scores: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def update(self, output) -> None:
        scores, labels = output
        self._scores.extend(scores if isinstance(scores, (list, tuple)) else list(scores))
        self._labels.extend(labels if isinstance(labels, (list, tuple)) else list(labels))

    def compute(self) -> float:
        scores, labels = gather_rows(self._scores), gather_rows(self._labels)
        names = self.class_names or [f"class{i}" for i in range(scores.shape[1])]
        value = classification_report(labels.numpy(), scores.numpy(), names, n_bootstrap=0)["macro"]["auroc"]
        return value if math.isfinite(value) else float("nan")
