"""Which part of a network is the pre-trained image encoder, and locking it: the one way segmentation (frozen-encoder
probe) and classification (linear probe) stop a transferred encoder from training.

The encoder is what pre-training transfers (SwinUNETR's ``swinViT`` and its ``encoder1-4,10`` skip blocks;
BasicUNet's ``conv_0`` and ``down_1-4``), found on the network itself (MONAI SwinUNETR / BasicUNet, possibly
DDP-wrapped) or on its ``image_backbone`` (a model built around one, as the volume classifier). Locking sets its
parameters to ``requires_grad=False``; optimisers skip parameters without a gradient (no update, no weight decay),
and when every parameter a forward pass uses is locked autograd records nothing for it. With
``keep_norm_statistics`` (the default) the locked part's normalisation layers with running statistics stay in
inference mode even while the trainer puts the network in training mode, so the statistics loaded from the
checkpoint are used and never updated; ``False`` lets them follow the new data (only the weights are locked).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.networks.nets import BasicUNet, SwinUNETR

from custom.networks.swin_backbone import SwinUNETRBackbone
from custom.networks.unet_backbone import BasicUNetBackbone

__all__ = ["encoder_of", "encoder_prefixes_of", "lock_encoder"]

_NORMS_WITH_STATISTICS = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.instancenorm._InstanceNorm)


def encoder_of(network: torch.nn.Module) -> torch.nn.Module:
    """The MONAI SwinUNETR / BasicUNet that holds ``network``'s image encoder: ``network`` itself (without a DDP /
    DataParallel wrapper) or its ``image_backbone``."""
    network = getattr(network, "module", network)
    return getattr(network, "image_backbone", network)


def encoder_prefixes_of(network: torch.nn.Module) -> tuple[str, ...]:
    """The state-dict prefixes of the image encoder in :func:`encoder_of` ``(network)``."""
    network = encoder_of(network)
    if isinstance(network, SwinUNETR):
        return SwinUNETRBackbone.encoder_prefixes
    if isinstance(network, BasicUNet):
        return BasicUNetBackbone.encoder_prefixes
    raise ValueError(
        f"expected a MONAI SwinUNETR or BasicUNet (or a model with one as image_backbone) to hold the pre-trained "
        f"encoder, found {type(network).__name__}"
    )


def _keep_in_eval_mode(module: torch.nn.Module, _inputs: tuple) -> None:
    module.train(False)


def lock_encoder(
    network: torch.nn.Module, locked: bool = True, keep_norm_statistics: bool = True, log: Callable[[str], None] = print
) -> torch.nn.Module:
    """``network`` with its pre-trained image encoder locked when ``locked`` (module docstring); returns ``network``
    so a config can chain it. Logs how many parameters were locked and how many train."""
    if not locked:
        return network
    encoder = encoder_of(network)
    prefixes = encoder_prefixes_of(encoder)
    locked_count = 0
    for name, parameter in encoder.named_parameters():
        if name.startswith(prefixes):
            parameter.requires_grad_(False)
            locked_count += parameter.numel()
    if keep_norm_statistics:
        for name, module in encoder.named_modules():
            if (name + ".").startswith(prefixes) and isinstance(module, _NORMS_WITH_STATISTICS):
                module.register_forward_pre_hook(_keep_in_eval_mode)
    trainable = sum(p.numel() for p in getattr(network, "module", network).parameters() if p.requires_grad)
    statistics = "kept as loaded" if keep_norm_statistics else "updated on the new data"
    log(
        f"locked encoder ({', '.join(p.rstrip('.') for p in prefixes)}): {locked_count:,} parameters locked, "
        f"normalisation statistics {statistics}; {trainable:,} parameters train"
    )
    return network
