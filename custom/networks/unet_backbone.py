"""MONAI BasicUNet split into ``encode`` and ``decode``: the CNN backbone of the paper's ablation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import BasicUNet
from torch.utils.checkpoint import checkpoint

from custom.networks.encoder_features import EncoderFeatures

__all__ = ["BasicUNetBackbone", "CPU_TOY_NORM"]

#: normalisation of every CPU toy's BasicUNet, the pre-training's and each downstream bundle's (their ``cpu_toy.json``
#: read it): one value, because a toy pre-training's encoder must transfer into every downstream toy whole, and the
#: transfer refuses batch-norm running statistics a network has no place for (#27). Batch norm: see the class.
CPU_TOY_NORM = "batch"


class BasicUNetBackbone(BasicUNet):
    """MONAI ``BasicUNet`` with the forward pass split at the bottleneck (same ``state_dict`` keys as BasicUNet).

    Input ``(B, in_channels, D, H, W)`` with D, H, W divisible by 16; bottleneck ``(B, features[4], D/16, H/16, W/16)``.
    ``use_checkpoint`` recomputes the encoder blocks in the backward pass to save activation memory. ``norm`` is
    MONAI's norm spec; the default instance norm matches ``BasicUNet``'s, batch norm keeps per-crop intensity
    information in the bottleneck that instance norm removes (the CPU toy uses it, see the bundle docs).
    ``embedding_level`` picks the encoder block (0 = ``conv_0`` ... 4 = ``down_4``, the bottleneck) whose output the
    image embedding is pooled from (``EncoderFeatures.embedding_source``, width ``embedding_channels``): on a 32^3
    crop the bottleneck is a 2^3 grid, too coarse for the small findings a report names; level 2 (an 8^3 grid) is
    what the CPU toy uses.
    """

    encoder_prefixes: tuple[str, ...] = ("conv_0.", "down_1.", "down_2.", "down_3.", "down_4.")

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        features: Sequence[int] = (32, 32, 64, 128, 256, 32),
        norm: str | tuple = ("instance", {"affine": True}),
        use_checkpoint: bool = False,
        embedding_level: int = 4,
    ) -> None:
        super().__init__(
            spatial_dims=3, in_channels=in_channels, out_channels=out_channels, features=features, norm=norm
        )
        if embedding_level not in range(5):
            raise ValueError(f"embedding_level: expected an encoder block 0..4, found {embedding_level}")
        self.bottleneck_channels = int(features[4])
        self.embedding_level = int(embedding_level)
        self.embedding_channels = int(features[embedding_level])
        self.use_checkpoint = use_checkpoint

    def _run(self, block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and self.training and x.requires_grad:
            return checkpoint(block, x, use_reentrant=False)
        return block(x)

    def encode(self, x: torch.Tensor) -> EncoderFeatures:
        x0 = self._run(self.conv_0, x)
        x1 = self._run(self.down_1, x0)
        x2 = self._run(self.down_2, x1)
        x3 = self._run(self.down_3, x2)
        bottleneck = self._run(self.down_4, x3)
        levels = (x0, x1, x2, x3, bottleneck)
        return EncoderFeatures(
            skips=[x0, x1, x2, x3], bottleneck=bottleneck, embedding_source=levels[self.embedding_level]
        )

    def decode(self, features: EncoderFeatures) -> torch.Tensor:
        x0, x1, x2, x3 = features.skips
        u = self.upcat_4(features.bottleneck, x3)
        u = self.upcat_3(u, x2)
        u = self.upcat_2(u, x1)
        u = self.upcat_1(u, x0)
        return self.final_conv(u)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
