"""Corruption for TIR: random 3D block masking with noise in-fill (on the training device, per crop)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["BlockMaskCorruption"]


class BlockMaskCorruption:
    """Mask ``round(mask_ratio * cells)`` cells of a ``block_size`` grid (randomly shifted per crop) and fill them with
    Gaussian noise matching the crop's mean and standard deviation.

    ``crops`` ``(N, C, D, H, W)`` -> ``(corrupted, mask)``, ``mask`` ``(N, 1, D, H, W)`` bool, True where corrupted.
    ``intensity_jitter`` (optional) scales and shifts the whole corrupted crop by up to that fraction.
    """

    def __init__(self, mask_ratio: float = 0.4, block_size: int = 16, intensity_jitter: float = 0.0) -> None:
        if not 0 < mask_ratio < 1:
            raise ValueError(f"mask_ratio: expected a value in (0, 1), found {mask_ratio}")
        self.mask_ratio = mask_ratio
        self.block_size = block_size
        self.intensity_jitter = intensity_jitter

    def block_mask(self, n: int, spatial: tuple[int, int, int], device: torch.device) -> torch.Tensor:
        grid = [-(-s // self.block_size) for s in spatial]  # ceil division
        cells = grid[0] * grid[1] * grid[2]
        masked = max(1, round(self.mask_ratio * cells))
        order = torch.rand(n, cells, device=device).argsort(dim=1)
        cell_mask = torch.zeros(n, cells, device=device)
        cell_mask.scatter_(1, order[:, :masked], 1.0)
        cell_mask = cell_mask.view(n, 1, *grid)
        mask = F.interpolate(cell_mask, scale_factor=self.block_size, mode="nearest")[
            ..., : spatial[0], : spatial[1], : spatial[2]
        ]
        shifts = torch.randint(0, self.block_size, (n, 3)).tolist()
        mask = torch.stack([torch.roll(m, shifts=tuple(s), dims=(1, 2, 3)) for m, s in zip(mask, shifts)])
        return mask > 0.5

    def __call__(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = crops.shape[0]
        mask = self.block_mask(n, tuple(crops.shape[2:]), crops.device)
        dims = tuple(range(1, crops.ndim))
        mean = crops.mean(dim=dims, keepdim=True)
        std = crops.std(dim=dims, keepdim=True).clamp_min(1e-3)
        noise = mean + std * torch.randn_like(crops)
        corrupted = torch.where(mask, noise, crops)
        if self.intensity_jitter > 0:
            scale = 1 + self.intensity_jitter * (2 * torch.rand(n, *[1] * (crops.ndim - 1), device=crops.device) - 1)
            shift = self.intensity_jitter * (2 * torch.rand_like(scale) - 1)
            corrupted = corrupted * scale + shift
        return corrupted, mask
