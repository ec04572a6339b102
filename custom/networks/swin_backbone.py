"""SwinUNETR split into ``encode`` and ``decode`` so the interactor can sit on its bottleneck."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import SwinUNETR

from custom.networks.encoder_features import EncoderFeatures

__all__ = ["SwinUNETRBackbone"]


class SwinUNETRBackbone(SwinUNETR):
    """MONAI ``SwinUNETR`` with the forward pass split at the bottleneck.

    It *is* a SwinUNETR (same submodules, same ``state_dict`` keys), so its encoder weights load into a downstream
    ``SwinUNETR`` with no renaming. Input ``(B, in_channels, D, H, W)`` with D, H, W divisible by 32 (64 or more
    with instance norm); bottleneck ``(B, 16 * feature_size, D/32, H/32, W/32)``.
    """

    #: state-dict prefixes of the image encoder (what a downstream network should receive from pre-training)
    encoder_prefixes: tuple[str, ...] = ("swinViT.", "encoder1.", "encoder2.", "encoder3.", "encoder4.", "encoder10.")

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        norm_name: str = "instance",
        use_checkpoint: bool = False,
        use_v2: bool = False,
    ) -> None:
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            feature_size=feature_size,
            depths=depths,
            num_heads=num_heads,
            norm_name=norm_name,
            use_checkpoint=use_checkpoint,
            use_v2=use_v2,
        )
        self.bottleneck_channels = 16 * feature_size
        self.embedding_channels = 16 * feature_size  # the Swin-ViT stage-4 output (embedding_source below)

    def encode(self, x: torch.Tensor) -> EncoderFeatures:
        if not torch.jit.is_tracing():
            self._check_input_size(x.shape[2:])
        hidden = self.swinViT(x, self.normalize)
        skips = [
            self.encoder1(x),
            self.encoder2(hidden[0]),
            self.encoder3(hidden[1]),
            self.encoder4(hidden[2]),
            hidden[3],
        ]
        return EncoderFeatures(skips=skips, bottleneck=self.encoder10(hidden[4]), embedding_source=hidden[4])

    def decode(self, features: EncoderFeatures) -> torch.Tensor:
        enc0, enc1, enc2, enc3, hidden3 = features.skips
        x = self.decoder5(features.bottleneck, hidden3)
        x = self.decoder4(x, enc3)
        x = self.decoder3(x, enc2)
        x = self.decoder2(x, enc1)
        x = self.decoder1(x, enc0)
        return self.out(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
