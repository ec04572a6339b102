"""Text-informed image restoration (TIR) loss: L1 on the corrupted voxels, optionally a little on the rest."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MaskedRestorationLoss"]


class MaskedRestorationLoss(nn.Module):
    """``mean |restored - target|`` over masked voxels ``+ unmasked_weight * mean`` over the others.

    ``restored``, ``target`` ``(N, C, *S)``; ``mask`` same shape or broadcastable, True/1 where the input was corrupted.
    With ``unmasked_weight=0`` only masked voxels count. A perfect restoration gives exactly 0.
    """

    def __init__(self, unmasked_weight: float = 0.1) -> None:
        super().__init__()
        self.unmasked_weight = unmasked_weight

    def forward(self, restored: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        error = (restored.float() - target.float()).abs()
        mask = mask.to(error.dtype).expand_as(error)
        masked = (error * mask).sum() / mask.sum().clamp_min(1.0)
        if self.unmasked_weight == 0:
            return masked
        unmasked = (error * (1 - mask)).sum() / (1 - mask).sum().clamp_min(1.0)
        return masked + self.unmasked_weight * unmasked
