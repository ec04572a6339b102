"""Whole-volume multi-label classifier on the T3D image encoder: native-resolution windows, pooled over the volume.

The input is the whole preprocessed volume at its native resolution, ``(B, C_in, X, Y, Z)`` (any size; B is usually
1 because volumes differ in size). It is cut into ``roi_size`` windows on an overlapping grid (the volume is padded
where it is smaller than one window), every window goes through the image backbone's ``encode`` in chunks of
``sw_batch_size``, and the encoder tokens of *all* windows of a volume form one bag that is pooled into one vector:

- ``"attention"``: gated attention pooling (Ilse et al., ICML 2018), a learned score per token, softmax over the bag;
- ``"mean"`` / ``"max"``: plain average / maximum over the bag.

A linear layer (with dropout) maps the pooled vector to one logit per class. Nothing is ever resampled to a coarser
grid: the cost of a large volume is more windows, not lost detail (the T3D premise). ``max_train_windows`` bounds
the windows one training step encodes (a random subset each step, multiple-instance style); evaluation and
inference always use every window.

Tokens are read from ``EncoderFeatures.embedding_tokens`` (SwinUNETR: the Swin-ViT stage-4 output, as the T3D image
head; BasicUNet: the bottleneck), so the T3D-pre-trained part of the encoder is what the classifier reads.
``freeze_encoder=True`` is the linear probe: encoder parameters do not train and its normalisation layers stay in
evaluation mode (running statistics untouched).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["window_origins", "VolumeClassifier"]


def window_origins(shape: Sequence[int], roi_size: Sequence[int], overlap: float = 0.25) -> torch.Tensor:
    """``(W, 3)`` origins of windows that cover a ``shape`` volume with at least ``overlap`` between neighbours."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap: expected a value in [0, 1), found {overlap}")
    axes = []
    for size, roi in zip(shape, roi_size):
        span = max(int(size) - int(roi), 0)
        stride = max(int(roi * (1.0 - overlap)), 1)
        count = math.ceil(span / stride) + 1 if span > 0 else 1
        axes.append(torch.linspace(0, span, count).round().long().unique())
    return torch.cartesian_prod(*axes).reshape(-1, len(axes))


class VolumeClassifier(nn.Module):
    """Args:
    image_backbone: ``SwinUNETRBackbone`` or ``BasicUNetBackbone`` (anything with ``encode`` and
        ``embedding_channels``; for SwinUNETR the token width is ``16 * feature_size`` as well).
    num_classes: output logits.
    roi_size: window size (divisible by 32 for SwinUNETR, by 16 for BasicUNet).
    overlap: minimum fraction shared by neighbouring windows.
    pooling: ``"attention"``, ``"mean"`` or ``"max"`` over every token of every window.
    sw_batch_size: windows encoded per forward pass of the backbone.
    max_train_windows: in training mode, encode at most this many randomly chosen windows (None: all).
    freeze_encoder: linear probe (only pooling and head train).
    dropout: before the linear head.
    attention_dim: hidden width of the gated attention scorer.
    """

    def __init__(
        self,
        image_backbone: nn.Module,
        num_classes: int,
        roi_size: Sequence[int] = (96, 96, 96),
        overlap: float = 0.25,
        pooling: str = "attention",
        sw_batch_size: int = 4,
        max_train_windows: int | None = None,
        freeze_encoder: bool = False,
        dropout: float = 0.0,
        attention_dim: int = 128,
    ) -> None:
        super().__init__()
        if pooling not in ("attention", "mean", "max"):
            raise ValueError(f"pooling: expected 'attention', 'mean' or 'max', found '{pooling}'")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes: expected at least 1, found {num_classes}")
        self.image_backbone = image_backbone
        self.roi_size = tuple(int(r) for r in roi_size)
        self.overlap = float(overlap)
        self.pooling = pooling
        self.sw_batch_size = int(sw_batch_size)
        self.max_train_windows = None if max_train_windows is None else int(max_train_windows)
        self.freeze_encoder = bool(freeze_encoder)
        width = int(image_backbone.embedding_channels)
        if pooling == "attention":
            self.attention_value = nn.Linear(width, attention_dim)
            self.attention_gate = nn.Linear(width, attention_dim)
            self.attention_score = nn.Linear(attention_dim, 1)
        self.norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, int(num_classes))
        if self.freeze_encoder:
            self.image_backbone.requires_grad_(False)

    def train(self, mode: bool = True) -> VolumeClassifier:
        super().train(mode)
        if self.freeze_encoder:
            self.image_backbone.eval()  # linear probe: batch-norm statistics of the encoder stay as loaded
        return self

    def windows(self, volume: torch.Tensor) -> torch.Tensor:
        """``(C, X, Y, Z)`` -> ``(W, C, *roi_size)`` (zero-padded where the volume is smaller than a window)."""
        pad = [max(r - s, 0) for s, r in zip(volume.shape[1:], self.roi_size)]
        if any(pad):
            volume = F.pad(volume, [p for axis in reversed(pad) for p in (0, axis)])
        origins = window_origins(volume.shape[1:], self.roi_size, self.overlap)
        if self.training and self.max_train_windows and len(origins) > self.max_train_windows:
            origins = origins[torch.randperm(len(origins))[: self.max_train_windows]]
        rx, ry, rz = self.roi_size
        return torch.stack([volume[:, x : x + rx, y : y + ry, z : z + rz] for x, y, z in origins.tolist()])

    def _window_tokens(self, chunk: torch.Tensor) -> torch.Tensor:
        backbone = self.image_backbone
        if hasattr(backbone, "swinViT"):  # SwinUNETR: only the transformer output is read, skip the CNN skip path
            return backbone.swinViT(chunk, backbone.normalize)[4].flatten(2).transpose(1, 2)
        return backbone.encode(chunk).embedding_tokens

    def encode_tokens(self, windows: torch.Tensor) -> torch.Tensor:
        """``(W, C, *roi)`` -> ``(W, T, width)`` encoder tokens of every window."""
        tokens = []
        grad = torch.is_grad_enabled() and not self.freeze_encoder
        with torch.set_grad_enabled(grad):
            for start in range(0, windows.shape[0], self.sw_batch_size):
                tokens.append(self._window_tokens(windows[start : start + self.sw_batch_size]))
        return torch.cat(tokens)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(N, width)`` bag -> ``(width,)``."""
        if self.pooling == "mean":
            return tokens.mean(0)
        if self.pooling == "max":
            return tokens.max(0).values
        hidden = torch.tanh(self.attention_value(tokens)) * torch.sigmoid(self.attention_gate(tokens))
        weights = self.attention_score(hidden).squeeze(-1).softmax(0)
        return (weights.unsqueeze(-1) * tokens).sum(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, X, Y, Z)`` whole volumes -> ``(B, num_classes)`` logits."""
        if x.ndim != 5:
            raise ValueError(f"VolumeClassifier input: expected (B, C, X, Y, Z), found shape {tuple(x.shape)}")
        x = x.as_tensor() if hasattr(x, "as_tensor") else x  # MONAI MetaTensor -> plain tensor
        # the windows of every volume in the batch are encoded together (batch-norm statistics then span volumes)
        per_volume = [self.windows(volume) for volume in x]
        tokens = self.encode_tokens(torch.cat(per_volume)).split([len(w) for w in per_volume])
        pooled = torch.stack([self.pool(t.flatten(0, 1)) for t in tokens])
        return self.head(self.dropout(self.norm(pooled)))
