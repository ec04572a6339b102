"""Multi-label binary cross-entropy for imbalanced classes: per-class positive weights and optional focal modulation.

Disease labels derived from reports are rare (many BIMCV classes have a few percent positives), so plain BCE mostly
learns "negative". Two standard remedies, both configurable:

- ``pos_weight[c] = min(negatives_c / positives_c, max_pos_weight)`` from the *training* rows
  (:func:`positive_weights`): a positive of class c counts as much as all its negatives together; capped so a class
  with one positive does not dominate; a class with no positives gets weight 1 (nothing to up-weight);
- ``gamma > 0``: focal loss (Lin et al., ICCV 2017), each term scaled by ``(1 - p_t) ** gamma`` so easy, confident
  examples stop dominating the gradient. ``gamma = 0`` is weighted BCE.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["positive_weights", "ImbalancedBCELoss"]


def positive_weights(rows: Sequence[dict], label_key: str = "label", max_pos_weight: float = 50.0) -> torch.Tensor:
    """``(C,)`` negatives / positives per class over ``rows`` (capped at ``max_pos_weight``; 1 where no positives)."""
    labels = torch.tensor([list(row[label_key]) for row in rows], dtype=torch.float32)
    positives = labels.sum(0)
    negatives = labels.shape[0] - positives
    weights = torch.where(positives > 0, negatives / positives.clamp_min(1.0), torch.ones_like(positives))
    return weights.clamp(max=max_pos_weight)


class ImbalancedBCELoss(nn.Module):
    """``(B, C)`` logits, ``(B, C)`` 0/1 targets -> mean loss. ``pos_weight`` ``(C,)`` or None; ``gamma`` >= 0."""

    def __init__(self, pos_weight: torch.Tensor | Sequence[float] | None = None, gamma: float = 0.0) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma: expected a value >= 0, found {gamma}")
        self.gamma = float(gamma)
        weight = None if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float32)
        self.register_buffer("pos_weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.as_tensor() if hasattr(logits, "as_tensor") else logits  # MONAI MetaTensor -> tensor
        target = (target.as_tensor() if hasattr(target, "as_tensor") else target).to(logits.dtype)
        if target.shape != logits.shape:
            raise ValueError(
                f"ImbalancedBCELoss: expected targets of shape {tuple(logits.shape)}, found {tuple(target.shape)}"
            )
        pos_weight = None if self.pos_weight is None else self.pos_weight.to(logits.device, logits.dtype)
        loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction="none")
        if self.gamma:
            probability = torch.sigmoid(logits)
            p_true = probability * target + (1 - probability) * (1 - target)
            loss = loss * (1 - p_true).pow(self.gamma)
        return loss.mean()
