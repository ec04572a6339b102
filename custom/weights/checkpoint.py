"""Checkpoint files of a pre-training run: atomic writes, safe loads, and the downstream-ready encoder export.

``models/`` of a run holds
- ``checkpoint_last.pt``: everything needed to resume (network, optimizer, LR scheduler, epoch/iteration);
- ``model.pt``: the full T3D model state dict (what ``inference.json`` and MONAI Label load);
- ``image_encoder.pt``: the image encoder only, with plain SwinUNETR / BasicUNet key names, so
  ``SwinUNETR(...).load_state_dict(torch.load(path, weights_only=True), strict=False)`` misses no encoder key;
- ``image_encoder.json``: which backbone class and constructor arguments the encoder belongs to.
"""

from __future__ import annotations

import json
import os

import torch
from torch import nn

__all__ = ["atomic_save", "safe_load", "unwrap", "image_encoder_state_dict", "export_weights"]


def atomic_save(obj: object, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash never leaves half a checkpoint."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def safe_load(path: str, map_location: str | torch.device = "cpu") -> dict:
    """``torch.load(..., weights_only=True)`` with a one-line error naming the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for damaged files; all mean the same here
        raise ValueError(f"{path}: expected a readable weights-only checkpoint, found {type(err).__name__}: {str(err).splitlines()[0]}") from None


def unwrap(network: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (or the model itself)."""
    return network.module if hasattr(network, "module") and isinstance(network.module, nn.Module) else network


def image_encoder_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's encoder tensors under their plain MONAI names (``swinViT.*``, ``encoder1.*`` ... / ``conv_0.*``...)."""
    return {k: v.detach().cpu() for k, v in backbone.state_dict().items() if k.startswith(backbone.encoder_prefixes)}


def _backbone_description(backbone: nn.Module) -> dict:
    return {
        "backbone": type(backbone).__name__,
        "monai_class": type(backbone).__mro__[1].__name__,
        "bottleneck_channels": int(backbone.bottleneck_channels),
        "embedding_channels": int(backbone.embedding_channels),
        "encoder_prefixes": list(backbone.encoder_prefixes),
    }


def export_weights(network: nn.Module, save_dir: str) -> None:
    """Write ``model.pt``, ``image_encoder.pt`` and ``image_encoder.json`` of a T3D model into ``save_dir``."""
    model = unwrap(network)
    atomic_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, os.path.join(save_dir, "model.pt"))
    atomic_save(image_encoder_state_dict(model.image_backbone), os.path.join(save_dir, "image_encoder.pt"))
    tmp = os.path.join(save_dir, f"image_encoder.json.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(_backbone_description(model.image_backbone), f, indent=1)
    os.replace(tmp, os.path.join(save_dir, "image_encoder.json"))
