"""Projection head into the shared image-text space."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from custom.networks.running_standardizer import RunningStandardizer

__all__ = ["ProjectionHead"]


class ProjectionHead(nn.Module):
    """``(B, in_dim)`` -> L2-normalised ``(B, out_dim)``: running standardisation, then LayerNorm-Linear-GELU-Linear.

    Every output depends on its own input only: no batch statistics, so a per-GPU batch of 1 works, two reports are
    not forced to opposite directions, and training and evaluation compute the same function. (A closing BatchNorm1d
    used to centre the outputs over the batch; it made a batch of 2 give cosine -1 whatever the reports said.)

    It runs in float32 whatever autocast is active, and the L2 normalisation sees float32: under bf16 autocast the
    last Linear returned bfloat16 (8-bit mantissa), which put errors of up to 0.043 into TCL logits at scale 100
    (1e-5 from float32 embeddings). The head is a few small matrix products, so float32 costs nothing measurable.

    The leading LayerNorm puts every backbone's pooled features (instance-normalised SwinUNETR, batch-normalised
    UNet) and every text encoder's pooled vectors at one scale, so one learning rate and initialisation suit all.
    The uniform start of the contrastive loss, where every crop (and every report) looks alike, is left through
    :class:`~custom.networks.running_standardizer.RunningStandardizer`: per-feature running statistics of earlier
    batches, never of the batch-mates, take the shared direction out of the inputs whatever the backbone's norm or
    the text encoder's freezing. ``standardize=False`` leaves it out (the CPU toys, whose whitened text vectors and
    batch-normalised backbone already spread the inputs, were measured without it).
    """

    def __init__(
        self, in_dim: int, out_dim: int = 512, hidden_dim: int | None = None, standardize: bool = True
    ) -> None:
        super().__init__()
        hidden_dim = hidden_dim or in_dim
        self.standardize = RunningStandardizer(in_dim) if standardize else nn.Identity()
        self.layers = nn.Sequential(
            nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return F.normalize(self.layers(self.standardize(x.float())), dim=-1)
