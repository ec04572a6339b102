"""Where sub-volumes are cut: K body-biased random crops for training, a fixed grid for evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["sample_crop_origins", "grid_crop_origins", "read_crop"]


def _clamp_origins(centres: np.ndarray, shape: Sequence[int], crop_size: Sequence[int]) -> np.ndarray:
    crop = np.asarray(crop_size)
    high = np.maximum(np.asarray(shape) - crop, 0)
    return np.clip(centres - crop // 2, 0, high).astype(np.int64)


def sample_crop_origins(
    shape: Sequence[int],
    crop_size: Sequence[int],
    foreground: np.ndarray,
    count: int,
    foreground_prob: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """``(count, 3)`` crop origins, each fully inside the volume (where it fits).

    With probability ``foreground_prob`` a crop is centred on a random body voxel from ``foreground`` ``(M, 3)``,
    otherwise anywhere; centres are then shifted so the crop stays inside the volume.
    """
    centres = rng.integers(0, np.asarray(shape), size=(count, 3))
    if len(foreground):
        use_body = rng.random(count) < foreground_prob
        picks = foreground[rng.integers(0, len(foreground), size=count)]
        centres = np.where(use_body[:, None], picks, centres)
    return _clamp_origins(centres, shape, crop_size)


def grid_crop_origins(shape: Sequence[int], crop_size: Sequence[int], per_axis: int = 2) -> np.ndarray:
    """``(per_axis**3, 3)`` deterministic origins evenly spread so the crops cover the volume (evaluation)."""
    axes = []
    for size, crop in zip(shape, crop_size):
        axes.append(np.unique(np.linspace(0, max(size - crop, 0), per_axis).round().astype(np.int64)))
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def read_crop(volume: np.ndarray, origin: Sequence[int], crop_size: Sequence[int], pad_value: float = 0.0) -> np.ndarray:
    """Copy one crop out of ``volume`` (an array or a read-only memmap) as float32, padding where it does not fit."""
    window = tuple(slice(int(o), int(o) + int(c)) for o, c in zip(origin, crop_size))
    crop = np.asarray(volume[window], dtype=np.float32)
    if crop.shape != tuple(crop_size):
        padding = [(0, int(c) - s) for s, c in zip(crop.shape, crop_size)]
        crop = np.pad(crop, padding, constant_values=pad_value)
    return crop
