"""Frozen-encoder probes for segmentation: the pre-trained encoder stops training, the decoder learns on its features.

Probing a frozen encoder is the usual way to compare representations (the linear probe's counterpart for dense
prediction; ``t3d_bimcv_cls`` has the linear probe, ``linear_probe``). What is frozen is exactly what pre-training
transfers (:func:`custom.weights.transfer.encoder_prefixes_of`: SwinUNETR's ``swinViT`` and its ``encoder1-4,10``
skip blocks; BasicUNet's ``conv_0`` and ``down_1-4``); the decoder and output layer, which start fresh, train. The
frozen part's normalisation layers stay in inference mode even while the trainer puts the network in training mode:
batch-norm running statistics loaded from the checkpoint are used and never updated (the transfer refuses a network
whose normalisation differs from the pre-training's, so they are the pre-training's); instance norm, which keeps no
statistics, normalises each input by itself in either mode.
"""

from __future__ import annotations

import torch

from custom.weights.transfer import encoder_prefixes_of

__all__ = ["freeze_encoder"]

_NORMS_WITH_STATISTICS = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.instancenorm._InstanceNorm)


def _keep_in_eval_mode(module: torch.nn.Module, _inputs: tuple) -> None:
    module.train(False)


def freeze_encoder(network: torch.nn.Module, frozen: bool = True, log=print) -> torch.nn.Module:
    """``network`` (MONAI SwinUNETR or BasicUNet, possibly DDP-wrapped) with its encoder parameters set to
    ``requires_grad=False`` when ``frozen``; returns ``network`` so a config can chain it. Parameters without a
    gradient are skipped by the optimisers (no update, no weight decay), so the optimiser can keep all parameters."""
    if not frozen:
        return network
    prefixes = encoder_prefixes_of(network)
    target = getattr(network, "module", network)
    frozen_count = trainable_count = 0
    for name, parameter in target.named_parameters():
        if name.startswith(prefixes):
            parameter.requires_grad_(False)
            frozen_count += parameter.numel()
        else:
            trainable_count += parameter.numel()
    for name, module in target.named_modules():
        if (name + ".").startswith(prefixes) and isinstance(module, _NORMS_WITH_STATISTICS):
            module.register_forward_pre_hook(_keep_in_eval_mode)
    log(
        f"frozen encoder ({', '.join(p.rstrip('.') for p in prefixes)}): {frozen_count:,} parameters frozen, "
        f"{trainable_count:,} train (decoder and output layer)"
    )
    return network
