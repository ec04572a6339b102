"""Image embedding head: attention pooling of the bottleneck tokens, then projection into the shared space."""

from __future__ import annotations

import torch
from torch import nn

from custom.networks.projection import ProjectionHead

__all__ = ["ImageEmbeddingHead"]


class ImageEmbeddingHead(nn.Module):
    """``(B, N, C)`` bottleneck tokens -> L2-normalised ``(B, out_dim)``.

    Attention pooling (a learned query scores every token) rather than a plain average, because both backbones end
    in instance normalisation: the spatial mean of an instance-normalised channel is nearly the same for every input,
    so an averaged bottleneck carries almost no information about the crop.

    Pooling and projection run in float32 whatever autocast is active (see :class:`ProjectionHead`): the embedding
    reaches the L2 normalisation and TCL's logits without bfloat16 rounding; the tokens are ``(B, N, C)`` with N a few
    dozen, so this costs nothing next to the backbone.
    """

    def __init__(self, in_dim: int, out_dim: int = 512, standardize: bool = True) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(in_dim) * in_dim**-0.5)
        self.key = nn.Linear(in_dim, in_dim)
        self.projection = ProjectionHead(in_dim, out_dim, standardize=standardize)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        with torch.autocast(tokens.device.type, enabled=False):
            tokens = tokens.float()
            scores = self.key(tokens) @ self.query / tokens.shape[-1] ** 0.5  # (B, N)
            pooled = (scores.softmax(dim=1).unsqueeze(-1) * tokens).sum(dim=1)
            return self.projection(pooled)
