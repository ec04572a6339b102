"""The one interface both image backbones expose: multi-scale skip features plus a bottleneck."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["EncoderFeatures"]


@dataclass
class EncoderFeatures:
    """What a backbone's ``encode`` returns and its ``decode`` consumes.

    ``skips``: backbone-specific skip tensors, highest resolution first, each ``(B, C_i, *S_i)``.
    ``bottleneck``: ``(B, C, d, h, w)``, the coarsest features; ``tokens`` flattens it to ``(B, d*h*w, C)``.
    """

    skips: list[torch.Tensor]
    bottleneck: torch.Tensor

    @property
    def tokens(self) -> torch.Tensor:
        return self.bottleneck.flatten(2).transpose(1, 2)

    def with_tokens(self, tokens: torch.Tensor) -> "EncoderFeatures":
        """Same skips, bottleneck replaced by ``tokens`` ``(B, N, C)`` reshaped to the bottleneck grid."""
        bottleneck = tokens.transpose(1, 2).reshape(self.bottleneck.shape)
        return EncoderFeatures(skips=self.skips, bottleneck=bottleneck)
