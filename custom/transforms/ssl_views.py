"""The two augmented views of the image-only SSL baseline (Tang et al., CVPR 2022): random 90-degree rotation about
one axis (the rotation task's label) and random inner cut-out (the inpainting task's corruption).

Both act on a batch ``(N, C, D, H, W)`` on the training device and draw from torch's global generator, so
``monai.utils.set_determinism`` makes them repeatable.
"""

from __future__ import annotations

import torch

__all__ = ["random_rotation", "RandomCutout"]


def random_rotation(crops: torch.Tensor, num_classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate crop ``i`` by ``k_i * 90`` degrees in the plane of its last two spatial axes (about the first one);
    returns ``(rotated, k)`` with ``k`` ``(N,)`` long in ``0..num_classes-1``. Crops must be square in that plane."""
    if crops.shape[-1] != crops.shape[-2]:
        raise ValueError(
            f"crops: expected equal sizes on the last two axes for 90-degree rotation, found {tuple(crops.shape[2:])}"
        )
    k = torch.randint(0, num_classes, (crops.shape[0],))
    rotated = torch.stack([torch.rot90(crop, int(turns), dims=(-2, -1)) for crop, turns in zip(crops, k)])
    return rotated, k.to(crops.device)


class RandomCutout:
    """Tang et al.'s ``aug_rand``: per crop, boxes (each side ``min_block``..``max_block`` of the crop side) are
    filled with [0, 1]-scaled Gaussian noise until a random fraction up to ``max_drop`` of the voxels is covered;
    then, with another crop of the batch drawn at random, boxes are filled with that crop's content the same way.

    ``crops`` ``(N, C, D, H, W)`` -> ``(augmented, mask)``, ``mask`` ``(N, 1, D, H, W)`` bool, True where replaced.
    """

    def __init__(self, max_drop: float = 0.3, max_block: float = 0.25, min_block: float = 0.05) -> None:
        if not 0 < max_drop < 1 or not 0 < min_block <= max_block <= 1:
            raise ValueError(
                f"expected 0 < max_drop < 1 and 0 < min_block <= max_block <= 1, "
                f"found {max_drop}, {min_block}, {max_block}"
            )
        self.max_drop = max_drop
        self.max_block = max_block
        self.min_block = min_block

    def _drop(self, crop: torch.Tensor, mask: torch.Tensor, source: torch.Tensor | None) -> None:
        """Fill boxes of ``crop`` ``(C, *S)`` in place (noise, or ``source``'s voxels) and mark them in ``mask``."""
        spatial = crop.shape[1:]
        budget = float(torch.rand(())) * self.max_drop * spatial.numel()
        low = [max(1, int(self.min_block * s)) for s in spatial]
        high = [max(lo + 1, int(self.max_block * s) + 1) for lo, s in zip(low, spatial)]
        covered = 0
        while covered < budget:
            box = []
            for size, lo, hi in zip(spatial, low, high):
                start = int(torch.randint(0, max(1, size - lo), ()))
                box.append(slice(start, min(size, start + int(torch.randint(lo, hi, ())))))
            region = (slice(None), *box)
            if source is None:
                noise = torch.randn_like(crop[region])
                crop[region] = (noise - noise.min()) / (noise.max() - noise.min()).clamp_min(1e-6)
            else:
                crop[region] = source[region]
            mask[region] = True
            covered += crop[region][0].numel()

    def __call__(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        augmented = crops.detach().clone()
        mask = torch.zeros((crops.shape[0], 1, *crops.shape[2:]), dtype=torch.bool, device=crops.device)
        for i in range(crops.shape[0]):
            self._drop(augmented[i], mask[i], None)
            other = int(torch.randint(0, crops.shape[0], ()))
            if other != i:
                self._drop(augmented[i], mask[i], augmented[other])
        return augmented, mask
