"""Losses of the image-only SSL baseline (Tang et al., CVPR 2022, the public SwinUNETR pre-training).

``L = rotation_weight * CE(rotation) + contrast_weight * NT-Xent(view 1, view 2) + reconstruction_weight * L1`` with
all three weights 1 and temperature 0.5, as in that work's ``Loss`` / ``Contrast`` classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ViewContrastiveLoss", "SwinSSLLoss"]


class ViewContrastiveLoss(nn.Module):
    """NT-Xent between two views: row ``i`` of ``view1`` and row ``i`` of ``view2`` are the only positive pair;
    every other row of either view is a negative (augmentation identity decides, no report is consulted).

    ``view1``, ``view2`` ``(N, D)``, any scale (normalised here). ``N >= 2``.
    """

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        n = view1.shape[0]
        z = F.normalize(torch.cat([view1, view2]).float(), dim=1)
        logits = z @ z.T / self.temperature
        logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
        targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
        return F.cross_entropy(logits, targets)


class SwinSSLLoss(nn.Module):
    """The three terms of Tang et al. and their weighted sum.

    ``forward(rotation_logits (2N, 4), rotations (2N,), projections1 (N, D), projections2 (N, D),
    reconstruction (2N, C, *S), target (2N, C, *S))`` -> dict of 0-dim tensors ``loss``, ``rotation``, ``contrast``,
    ``reconstruction``. Reconstruction is L1 over every voxel (Tang et al.), not only the cut-out ones.
    """

    def __init__(
        self,
        rotation_weight: float = 1.0,
        contrast_weight: float = 1.0,
        reconstruction_weight: float = 1.0,
        temperature: float = 0.5,
    ) -> None:
        super().__init__()
        self.weights = {
            "rotation": rotation_weight,
            "contrast": contrast_weight,
            "reconstruction": reconstruction_weight,
        }
        self.contrast = ViewContrastiveLoss(temperature)

    def forward(
        self,
        rotation_logits: torch.Tensor,
        rotations: torch.Tensor,
        projections1: torch.Tensor,
        projections2: torch.Tensor,
        reconstruction: torch.Tensor,
        target: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        terms = {
            "rotation": F.cross_entropy(rotation_logits.float(), rotations),
            "contrast": self.contrast(projections1, projections2),
            "reconstruction": F.l1_loss(reconstruction.float(), target.float()),
        }
        terms["loss"] = sum(self.weights[k] * v for k, v in terms.items())
        return terms
