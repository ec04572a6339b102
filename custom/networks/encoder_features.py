"""The one interface both image backbones expose: multi-scale skip features plus a bottleneck."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["EncoderFeatures"]


@dataclass
class EncoderFeatures:
    """What a backbone's ``encode`` returns and its ``decode`` consumes.

    ``skips``: backbone-specific skip tensors, highest resolution first, each ``(B, C_i, *S_i)``.
    ``bottleneck``: ``(B, C, d, h, w)``, the coarsest features the decoder consumes; ``tokens`` flattens it to
    ``(B, d*h*w, C)`` (what the interactor updates).
    ``embedding_source``: ``(B, C, d, h, w)`` features the image embedding is pooled from; defaults to the bottleneck.
    SwinUNETR uses its transformer output here (as the public SwinUNETR SSL heads do): its bottleneck block ends in
    instance normalisation, which on a 2^3..3^3 grid removes almost everything a global embedding needs. BasicUNet
    uses the encoder block its ``embedding_level`` names (the bottleneck by default).
    """

    skips: list[torch.Tensor]
    bottleneck: torch.Tensor
    embedding_source: torch.Tensor | None = None

    @property
    def embedding_tokens(self) -> torch.Tensor:
        source = self.bottleneck if self.embedding_source is None else self.embedding_source
        return source.flatten(2).transpose(1, 2)

    @property
    def tokens(self) -> torch.Tensor:
        return self.bottleneck.flatten(2).transpose(1, 2)

    def with_tokens(self, tokens: torch.Tensor) -> EncoderFeatures:
        """Same skips, bottleneck replaced by ``tokens`` ``(B, N, C)`` reshaped to the bottleneck grid."""
        bottleneck = tokens.transpose(1, 2).reshape(self.bottleneck.shape)
        return EncoderFeatures(skips=self.skips, bottleneck=bottleneck, embedding_source=self.embedding_source)

    def split(self, size: int) -> tuple[EncoderFeatures, EncoderFeatures]:
        """Features of the first ``size`` samples and of the rest (undoes a concatenated batch)."""

        def halves(tensor: torch.Tensor | None) -> tuple:
            return (None, None) if tensor is None else (tensor[:size], tensor[size:])

        skips = [halves(t) for t in self.skips]
        bottleneck, source = halves(self.bottleneck), halves(self.embedding_source)
        return (
            EncoderFeatures([a for a, _ in skips], bottleneck[0], source[0]),
            EncoderFeatures([b for _, b in skips], bottleneck[1], source[1]),
        )
