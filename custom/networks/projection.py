"""Projection head into the shared image-text space."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ProjectionHead"]


class ProjectionHead(nn.Module):
    """``(B, in_dim)`` -> L2-normalised ``(B, out_dim)`` through Linear-GELU-Linear-BatchNorm.

    The closing (non-affine) batch norm centres every output dimension over the batch before the L2 norm. Without it
    a freshly initialised head maps every input close to one common direction (bias terms and a random encoder's
    shared features dominate), every logit of the contrastive loss is equal, and its gradient vanishes there: training
    sits at the uniform solution (observed on the CPU toy). Centring rules that fixed point out.
    """

    def __init__(self, in_dim: int, out_dim: int = 512, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden_dim = hidden_dim or in_dim
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim), nn.BatchNorm1d(out_dim, affine=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.layers(x), dim=-1)
