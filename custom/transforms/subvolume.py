"""Where sub-volumes are cut: K body-biased random crops for training, a fixed grid for evaluation.

Training crops are *stratified* by default: the body's bounding box is split into at least K cells and the K crops
are centred in K different cells (a random body voxel of each). Independent draws, the other option, often put all
K crops in the same part of the body, so the report's findings are in none of them; measured on the sub-volume CPU
run (``docs/README.md`` of ``t3d_pretrain``, "Sub-volume TCL"), stratified crops are what let TCL leave its uniform
start.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["SAMPLING_MODES", "sample_crop_origins", "stratified_crop_origins", "strata_grid", "grid_crop_origins", "read_crop"]

SAMPLING_MODES = ("stratified", "independent")


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


def strata_grid(extent: Sequence[int], count: int) -> tuple[int, int, int]:
    """Cells per axis, at least ``count`` in all: halve the axis whose cells are longest until there are enough
    (K = 2 splits the longest axis, K = 4 the two longest, K = 8 all three of a cube)."""
    cells = [1, 1, 1]
    while cells[0] * cells[1] * cells[2] < count:
        longest = max(range(3), key=lambda a: extent[a] / cells[a])
        cells[longest] *= 2
    return cells[0], cells[1], cells[2]


def stratified_crop_origins(
    shape: Sequence[int],
    crop_size: Sequence[int],
    foreground: np.ndarray,
    count: int,
    rng: np.random.Generator,
    jitter: int | None = None,
) -> np.ndarray:
    """``(count, 3)`` crop origins centred in ``count`` different cells of the body's bounding box.

    ``foreground`` ``(M, 3)`` body voxels (the whole volume when empty). The box is split by :func:`strata_grid`;
    ``count`` distinct cells are drawn at random (cells without body voxels last). With ``jitter=None`` each crop is
    centred on a random body voxel of its cell (on the cell's centre when it has none); with an integer ``jitter``
    on the cell's centre moved by at most ``jitter`` voxels along each axis, so crops of one cell show the same part
    of the body in every volume (a lattice over the body). Crops are then shifted inside the volume.
    """
    points = np.asarray(foreground) if len(foreground) else np.argwhere(np.ones(tuple(int(s) for s in shape), bool))
    low, high = points.min(0), points.max(0) + 1
    cells = np.asarray(strata_grid(high - low, count))
    cell_of = np.minimum((points - low) * cells // (high - low), cells - 1)
    cell_id = np.ravel_multi_index(cell_of.T, cells)
    occupied = np.unique(cell_id)
    empty = np.setdiff1d(np.arange(int(np.prod(cells))), occupied)
    order = np.concatenate([rng.permutation(occupied), rng.permutation(empty)])
    centres = []
    for cell in order[:count]:  # strata_grid makes at least `count` cells
        members = np.flatnonzero(cell_id == cell) if jitter is None else ()
        if jitter is not None:
            index = np.asarray(np.unravel_index(int(cell), cells))
            centre = low + (index + 0.5) * (high - low) / cells
            centres.append(np.round(centre).astype(np.int64) + rng.integers(-int(jitter), int(jitter) + 1, size=3))
        elif len(members):
            centres.append(points[members[rng.integers(len(members))]])
        else:
            index = np.asarray(np.unravel_index(int(cell), cells))
            centres.append(low + (index + 0.5) * (high - low) / cells)
    return _clamp_origins(np.asarray(centres, dtype=np.int64), shape, crop_size)


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
