"""Which part of a downstream network is its image encoder: what pre-training transfers into and a probe freezes."""

from __future__ import annotations

import torch
from monai.networks.nets import BasicUNet, SwinUNETR

from custom.errors import WeightTransferError
from custom.networks.swin_backbone import SwinUNETRBackbone
from custom.networks.unet_backbone import BasicUNetBackbone

__all__ = ["encoder_prefixes_of"]


def encoder_prefixes_of(network: torch.nn.Module) -> tuple[str, ...]:
    """The state-dict prefixes of ``network``'s image encoder (MONAI SwinUNETR or BasicUNet, possibly wrapped)."""
    network = getattr(network, "module", network)
    if isinstance(network, SwinUNETR):
        return SwinUNETRBackbone.encoder_prefixes
    if isinstance(network, BasicUNet):
        return BasicUNetBackbone.encoder_prefixes
    raise WeightTransferError(
        f"expected a MONAI SwinUNETR or BasicUNet to receive encoder weights, found {type(network).__name__}"
    )
