"""Image-only self-supervised pre-training models: the baselines T3D is compared with, on the same image backbone.

- ``ssl_swin``: the SwinUNETR pre-training of Tang et al. (CVPR 2022): rotation prediction (4 classes), a contrastive
  projection of two augmented views, and inpainting reconstruction of the cut-out view.
- ``restoration_only``: Models-Genesis-style restoration, i.e. T3D's TIR with no report and no interactor.

Both wrap a ``SwinUNETRBackbone`` / ``BasicUNetBackbone`` under the attribute ``image_backbone``, the name the T3D
model uses, so ``custom.weights.checkpoint.export_weights`` writes the same ``model.pt`` / ``image_encoder.pt`` /
``image_encoder.json`` and a downstream bundle loads either with ``custom.weights.transfer.load_pretrained``.

Where this differs from Tang et al.'s code, on purpose (each keeps the comparison with T3D about the pretext tasks
alone): the heads read the *mean* of the embedding tokens (Tang et al. read the first and second token of the
Swin-ViT output: position-specific, and meaningless for a UNet bottleneck), and reconstruction goes through the
backbone's own decoder (Tang et al. use a separate up-sampling head on the bottleneck; T3D's TIR uses the backbone
decoder, so this way both methods pre-train the same parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["RotationHead", "ContrastiveHead", "ImageSSLOutput", "ImageSSLModel", "ROTATION_CLASSES"]

#: rotations predicted by the rotation head: 0, 90, 180, 270 degrees about one axis
ROTATION_CLASSES = 4


def _pool(tokens: torch.Tensor) -> torch.Tensor:
    """``(B, N, C)`` embedding tokens -> ``(B, C)`` mean."""
    return tokens.mean(dim=1)


class RotationHead(nn.Module):
    """``(B, N, C)`` tokens -> ``(B, 4)`` rotation logits (Tang et al.: a linear layer on the encoder output)."""

    def __init__(self, in_dim: int, num_classes: int = ROTATION_CLASSES) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.linear(_pool(tokens))


class ContrastiveHead(nn.Module):
    """``(B, N, C)`` tokens -> ``(B, out_dim)`` projection for the view-contrastive loss (Tang et al.: linear, 512)."""

    def __init__(self, in_dim: int, out_dim: int = 512) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.linear(_pool(tokens))


@dataclass
class ImageSSLOutput:
    """``rotation_logits`` ``(N, 4)``, ``projections`` ``(N, D)`` (not normalised), ``reconstruction`` ``(N, 1, *S)``;
    a part the model does not have is None."""

    rotation_logits: torch.Tensor | None
    projections: torch.Tensor | None
    reconstruction: torch.Tensor


class ImageSSLModel(nn.Module):
    """Image backbone + optional rotation and contrastive heads; reconstruction through the backbone's decoder.

    Args:
        image_backbone: ``SwinUNETRBackbone`` or ``BasicUNetBackbone`` (``encode``/``decode``, ``embedding_channels``).
        rotation: add the rotation head (``ssl_swin``).
        contrastive_dim: width of the contrastive projection (``ssl_swin``); 0 or None for no contrastive head.
    """

    def __init__(self, image_backbone: nn.Module, rotation: bool = True, contrastive_dim: int | None = 512) -> None:
        super().__init__()
        self.image_backbone = image_backbone
        width = image_backbone.embedding_channels
        self.rotation_head = RotationHead(width) if rotation else None
        self.contrastive_head = ContrastiveHead(width, contrastive_dim) if contrastive_dim else None

    def forward(self, x: torch.Tensor) -> ImageSSLOutput:
        """``x`` ``(N, C, *S)`` (augmented / corrupted crops) -> heads' outputs and the reconstruction of ``x``."""
        features = self.image_backbone.encode(x)
        tokens = features.embedding_tokens
        rotation = self.rotation_head(tokens) if self.rotation_head is not None else None
        projections = self.contrastive_head(tokens) if self.contrastive_head is not None else None
        return ImageSSLOutput(rotation, projections, self.image_backbone.decode(features))
