"""PCA whitening of a frozen text encoder's pooled report vectors (BERT-whitening)."""

from __future__ import annotations

import logging

import torch
from torch import nn

__all__ = ["TextWhitening"]


class TextWhitening(nn.Module):
    """``(B, in_dim)`` pooled report vectors -> ``(B, components)``: centred, rotated onto the top principal
    components of the training reports, each scaled to unit variance.

    Why: the pooled vectors of a small frozen BERT are strongly anisotropic (on the CPU toy the covariance eigenvalues
    fall from 7.6 to 1e-4 over 32 components), so every report looks alike to a freshly initialised projection and
    the contrastive loss stays at chance; whitened, the differences between reports have unit scale. The map is
    fitted once (:meth:`fit`) and kept in buffers, so checkpoints carry it to evaluation and inference.
    """

    def __init__(self, in_dim: int, components: int) -> None:
        super().__init__()
        if not 0 < components <= in_dim:
            raise ValueError(f"text_whitening: expected 1..{in_dim} components (the encoder width), found {components}")
        self.components = int(components)
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("transform", torch.zeros(in_dim, components))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, vectors: torch.Tensor) -> None:
        """``vectors`` ``(M, in_dim)``, one per training report. M reports span at most M - 1 directions: with fewer
        reports than that the missing components are left at zero (a warning says so), e.g. on a tiny test set."""
        if vectors.shape[0] < 2:
            raise ValueError(f"text_whitening: fitting needs at least 2 training reports, found {vectors.shape[0]}")
        usable = min(self.components, vectors.shape[0] - 1)
        if usable < self.components:
            logging.getLogger(__name__).warning(
                f"text_whitening: {vectors.shape[0]} training reports give only {usable} of {self.components} "
                "components; the rest are zero"
            )
        vectors = vectors.double()
        mean = vectors.mean(0)
        eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov((vectors - mean).T))  # ascending order
        top_values = eigenvalues.flip(0)[:usable].clamp_min(1e-8 * float(eigenvalues[-1]) + 1e-12)
        transform = torch.zeros_like(self.transform, dtype=torch.float64)
        transform[:, :usable] = eigenvectors.flip(1)[:, :usable] / top_values.sqrt()
        self.mean.copy_(mean.to(self.mean.dtype))
        self.transform.copy_(transform.to(self.transform.dtype))
        self.fitted.fill_(True)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        if not bool(self.fitted):
            raise RuntimeError("text_whitening: used before it was fitted (call T3DModel.prepare_text in initialize)")
        return (pooled - self.mean) @ self.transform
