"""The patient's body in a preprocessed CT: tissue above a threshold plus the low-density regions it encloses.

A voxel threshold alone (tissue above -500 HU) leaves out aerated lung (about -850 HU) and bowel gas, so crops
would never be centred on the organ chest reports talk about most. The body here is the patient outline: per axial
slice, everything not reachable from the slice border through sub-threshold voxels (air around the patient is, the
lungs enclosed by the chest wall are not). Thin detached structures (a table shell, cables, blankets) are dropped
first: only tissue connected, within its slice, to tissue at least ``2 * core_mm`` thick is kept.

The mask is computed on a grid of ``step x step x 1`` voxel blocks (a block is tissue when any of its voxels is), so
a 512x512x300 CT costs about a 128x128x300 array of work: cache preparation stays near decode speed
(``benchmarks/body_mask.py``). Body voxels are then sampled from the blocks without listing them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["BodyMask", "body_mask"]

#: in-plane block size is chosen so a slice has at most this many blocks per axis (a 512-wide slice: 4x4 blocks)
COARSE_SIDE = 128


def _running_max(values: np.ndarray, axis: int, backward: bool) -> np.ndarray:
    """``values`` replaced in place by their running maximum along ``axis`` (from the far end when ``backward``).
    A loop over the (short) axis of whole-slab maxima: several times faster than ``np.maximum.accumulate``."""
    slab = [slice(None)] * values.ndim
    steps = range(values.shape[axis] - 2, -1, -1) if backward else range(1, values.shape[axis])
    for i in steps:
        slab[axis] = i
        here = values[tuple(slab)]
        slab[axis] = i + 1 if backward else i - 1
        np.maximum(here, values[tuple(slab)], out=here)
    return values


def _spread_along(passable: np.ndarray, reached: np.ndarray, axis: int) -> np.ndarray:
    """``reached`` grown to every ``passable`` voxel whose run of passable voxels along ``axis`` holds a reached
    one (a scanline fill, both directions). Positions are uint8 from 1 (0: none): axes are at most ``COARSE_SIDE``."""
    index_shape = [1] * passable.ndim
    index_shape[axis] = n = passable.shape[axis]
    grown = reached.copy()
    for backward in (False, True):
        # positions count up in the direction of travel; a run holds a reached voxel at or before this one when the
        # last reached voxel comes after the last blocker
        position = (np.arange(n, 0, -1) if backward else np.arange(1, n + 1)).astype(np.uint8).reshape(index_shape)
        last_blocker = _running_max(np.multiply(~passable, position), axis, backward)
        grown |= _running_max(np.multiply(reached, position), axis, backward) > last_blocker
    return grown & passable


def _reachable(passable: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Voxels of ``passable`` ``(X, Y, Z)`` 4-connected within their axial slice to a voxel of ``seeds``: scanline
    fills along X and Y in turn until one adds nothing (the other axis was saturated already: a fixed point)."""
    reached = _spread_along(passable, seeds & passable, 0)
    axis = 1
    while True:
        grown = _spread_along(passable, reached, axis)
        if np.array_equal(grown, reached):
            return reached
        reached, axis = grown, 1 - axis


def _erode_in_plane(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` eroded ``radius`` times by the 4-neighbourhood of its axial slices (borders count as outside)."""
    for _ in range(radius):
        core = mask.copy()
        core[1:] &= mask[:-1]
        core[:-1] &= mask[1:]
        core[:, 1:] &= mask[:, :-1]
        core[:, :-1] &= mask[:, 1:]
        core[0], core[-1], core[:, 0], core[:, -1] = False, False, False, False
        mask = core
    return mask


@dataclass(frozen=True)
class BodyMask:
    """``blocks`` ``(ceil(X/step), ceil(Y/step), Z)`` bool: which ``step x step x 1`` blocks of a volume of ``shape``
    are body."""

    blocks: np.ndarray
    step: int
    shape: tuple[int, int, int]

    def voxels(self) -> np.ndarray:
        """``shape`` bool: the body at voxel resolution (every voxel of a body block)."""
        full = np.repeat(np.repeat(self.blocks, self.step, axis=0), self.step, axis=1)
        return full[: self.shape[0], : self.shape[1]]

    def voxel_count(self) -> int:
        """Body voxels (blocks cut by the volume's edge count only their voxels inside it)."""
        rows = np.minimum(self.step, self.shape[0] - self.step * np.arange(self.blocks.shape[0]))
        cols = np.minimum(self.step, self.shape[1] - self.step * np.arange(self.blocks.shape[1]))
        return int(np.einsum("ijk,i,j->", self.blocks, rows, cols, dtype=np.int64))

    def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``(M, 3)`` int32 distinct body voxels, M = min(count, body voxels), uniform over the body; all of them
        when there are at most ``count``. Never lists every body voxel of a large volume (a full ``argwhere`` of a
        512x512x300 CT costs seconds and gigabytes): blocks are drawn, then a voxel inside each, rejecting those
        past the volume's edge."""
        total = self.voxel_count()
        if total <= count:
            return np.argwhere(self.voxels()).astype(np.int32)
        blocks = np.flatnonzero(self.blocks)
        chosen = np.empty(0, dtype=np.int64)
        while len(chosen) < count:
            draw = int((count - len(chosen)) * 1.2) + 16
            i, j, k = np.unravel_index(blocks[rng.integers(0, len(blocks), draw)], self.blocks.shape)
            x = i * self.step + rng.integers(0, self.step, draw)
            y = j * self.step + rng.integers(0, self.step, draw)
            inside = (x < self.shape[0]) & (y < self.shape[1])
            linear = np.ravel_multi_index((x[inside], y[inside], k[inside]), self.shape)
            chosen = np.unique(np.concatenate([chosen, linear]))  # distinct voxels, as a draw without replacement
        chosen = rng.permutation(chosen)[:count]
        return np.stack(np.unravel_index(chosen, self.shape), axis=1).astype(np.int32)


def body_mask(
    volume: np.ndarray, threshold: float, spacing: Sequence[float] = (1.0, 1.0, 1.0), core_mm: float = 5.0
) -> BodyMask:
    """The body of ``volume`` ``(X, Y, Z)`` (RAS, axial slices along the last axis, preprocessed intensities).

    ``threshold``: intensity above which a voxel is tissue (0.25 = -500 HU with the default [-1000, 1000] window):
    skin and fat outline the patient; lungs and bowel gas below it are included when enclosed within their slice.
    ``spacing`` (mm per axis) and ``core_mm``: structures detached from the body and nowhere thicker than
    ``2 * core_mm`` in their slice are dropped (0 keeps everything above the threshold).
    """
    shape = tuple(int(s) for s in volume.shape)
    step = max(1, -(-max(shape[0], shape[1]) // COARSE_SIDE))
    tissue = volume > threshold
    if step > 1:  # a block is tissue when any voxel of it is: thin walls survive, so the air they enclose stays
        # enclosed. Thresholding first keeps this one pass over the volume in its own memory order (nibabel's
        # arrays are Fortran-ordered: strided float maxima over them cost ten times as much)
        tissue = np.logical_or.reduceat(tissue, np.arange(0, shape[0], step), axis=0)
        tissue = np.logical_or.reduceat(tissue, np.arange(0, shape[1], step), axis=1)
    tissue = np.ascontiguousarray(tissue)  # the fills below loop over slabs of it
    block_mm = step * min(float(spacing[0]), float(spacing[1]))
    radius = int(np.ceil(core_mm / block_mm)) if core_mm > 0 else 0
    if radius and tissue.any():  # before the fill: a table shell is thin, though the foam it encloses is not
        core = _erode_in_plane(tissue, radius)
        tissue = _reachable(tissue, core) if core.any() else tissue
    border = np.zeros(tissue.shape, dtype=bool)
    border[[0, -1]] = True
    border[:, [0, -1]] = True
    body = ~_reachable(~tissue, border)
    return BodyMask(blocks=body, step=step, shape=shape)  # type: ignore[arg-type]
