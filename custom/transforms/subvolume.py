"""Where sub-volumes are cut: K body-biased random crops for training, a fixed grid over the body for evaluation.

Training crops are *stratified* by default: the body's bounding box is split into at least K cells and the K crops
are centred in K different cells (a random body voxel of each). Independent draws, the other option, often put all
K crops in the same part of the body, so the report's findings are in none of them; measured on the sub-volume CPU
run (``docs/README.md`` of ``t3d_pretrain``, "Sub-volume TCL"), stratified crops are what let TCL leave its uniform
start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SAMPLING_MODES",
    "FINE_CELLS",
    "BodyGrid",
    "sample_crop_origins",
    "stratified_crop_origins",
    "strata_grid",
    "evaluation_crop_origins",
    "read_crops",
]

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


def _cell_centres(low: np.ndarray, high: np.ndarray, cells: Sequence[int]) -> np.ndarray:
    """``(prod(cells), 3)`` int64 centres of the cells of the box ``[low, high)`` split ``cells`` per axis, in
    C order of the cell index (cell ``(i, j, k)`` is row ``(i * cells[1] + j) * cells[2] + k``)."""
    index = np.stack(np.meshgrid(*(np.arange(c) for c in cells), indexing="ij"), axis=-1).reshape(-1, 3)
    centres = np.asarray(low) + (index + 0.5) * (np.asarray(high) - np.asarray(low)) / np.asarray(cells)
    return np.round(centres).astype(np.int64)


def strata_grid(extent: Sequence[int], count: int) -> tuple[int, int, int]:
    """Cells per axis, at least ``count`` in all: halve the axis whose cells are longest until there are enough
    (K = 2 splits the longest axis, K = 4 the two longest, K = 8 all three of a cube)."""
    cells = [1, 1, 1]
    while cells[0] * cells[1] * cells[2] < count:
        longest = max(range(3), key=lambda a: extent[a] / cells[a])
        cells[longest] *= 2
    return cells[0], cells[1], cells[2]


#: cells per axis of the grid body voxels are sorted by (:class:`BodyGrid`); every strata grid of powers of two up to
#: this size is a union of its cells, so drawing stratified crops never has to revisit all body voxels
FINE_CELLS = 8


@dataclass(frozen=True)
class BodyGrid:
    """Body voxels sorted by their cell of a ``cells``-per-axis grid over the body's bounding box.

    ``points`` ``(M, 3)`` int32 sorted by cell id, ``low``/``high`` ``(3,)`` the box (``high`` exclusive),
    ``offsets`` ``(cells**3 + 1,)``: the points of cell ``c`` are ``points[offsets[c]:offsets[c + 1]]``.
    ``VolumeCache`` builds it once per volume; :func:`stratified_crop_origins` then only sums ``cells**3`` counts.
    """

    points: np.ndarray
    low: np.ndarray
    high: np.ndarray
    cells: int
    offsets: np.ndarray

    @classmethod
    def build(cls, shape: Sequence[int], foreground: np.ndarray, cells: int = FINE_CELLS) -> BodyGrid:
        """``foreground`` ``(M, 3)`` body voxels; when empty the box is the whole volume of ``shape`` and every cell
        is empty (crops are then centred on cell centres)."""
        points = np.asarray(foreground, dtype=np.int64).reshape(-1, 3)
        if len(points):
            low, high = points.min(0), points.max(0) + 1
        else:
            low, high = np.zeros(3, np.int64), np.asarray(shape, np.int64)
        cell_id = np.ravel_multi_index(((points - low) * cells // (high - low)).T, (cells,) * 3)
        order = np.argsort(cell_id, kind="stable")
        offsets = np.searchsorted(cell_id[order], np.arange(cells**3 + 1))
        return cls(points[order].astype(np.int32), low, high, int(cells), offsets.astype(np.int64))

    def counts(self) -> np.ndarray:
        """``(cells, cells, cells)`` body voxels per cell."""
        return np.diff(self.offsets).reshape((self.cells,) * 3)


def stratified_crop_origins(
    shape: Sequence[int],
    crop_size: Sequence[int],
    foreground: np.ndarray,
    count: int,
    rng: np.random.Generator,
    jitter: int | None = None,
    body_grid: BodyGrid | None = None,
) -> np.ndarray:
    """``(count, 3)`` crop origins centred in ``count`` different cells of the body's bounding box.

    ``foreground`` ``(M, 3)`` body voxels (the whole volume when empty). The box is split by :func:`strata_grid`;
    ``count`` distinct cells are drawn at random (cells without body voxels last). With ``jitter=None`` each crop is
    centred on a random body voxel of its cell (on the cell's centre when it has none); with an integer ``jitter``
    on the cell's centre moved by at most ``jitter`` voxels along each axis, so crops of one cell show the same part
    of the body in every volume (a lattice over the body). Crops are then shifted inside the volume.
    ``body_grid``: the volume's :class:`BodyGrid` (``CachedVolume.body_grid``); built here from ``foreground`` when
    None, which is most of this function's cost.
    """
    grid = body_grid if body_grid is not None else BodyGrid.build(shape, foreground)
    cells = strata_grid(grid.high - grid.low, count)
    if any(grid.cells % c for c in cells):  # a strata grid finer than the stored one (many crops): sort at its size
        grid = BodyGrid.build(shape, grid.points, max(cells))
    per_cell = [grid.cells // c for c in cells]
    fine_counts = grid.counts()
    # cell (i, j, k) of the strata grid is the block fine_counts[i*pi:(i+1)*pi, j*pj:..., k*pk:...]
    counts = fine_counts.reshape(cells[0], per_cell[0], cells[1], per_cell[1], cells[2], per_cell[2]).sum((1, 3, 5))
    counts = counts.ravel()
    order = np.concatenate([rng.permutation(np.flatnonzero(counts)), rng.permutation(np.flatnonzero(counts == 0))])
    cell_centres = _cell_centres(grid.low, grid.high, cells)
    centres = []
    for cell in order[:count].tolist():  # strata_grid makes at least `count` cells
        index = (cell // (cells[1] * cells[2]), cell // cells[2] % cells[1], cell % cells[2])
        if jitter is not None:
            centres.append(cell_centres[cell] + rng.integers(-int(jitter), int(jitter) + 1, size=3))
        elif counts[cell]:
            block = tuple(slice(i * p, (i + 1) * p) for i, p in zip(index, per_cell))
            fine_ids = np.arange(grid.cells**3).reshape((grid.cells,) * 3)[block].ravel()
            cumulative = np.cumsum(fine_counts[block].ravel())
            pick = int(rng.integers(counts[cell]))  # a uniform body voxel of the cell
            fine = int(np.searchsorted(cumulative, pick, side="right"))
            before = int(cumulative[fine - 1]) if fine else 0
            centres.append(grid.points[grid.offsets[fine_ids[fine]] + pick - before])
        else:
            centres.append(cell_centres[cell])
    return _clamp_origins(np.asarray(centres, dtype=np.int64), shape, crop_size)


def evaluation_crop_origins(
    shape: Sequence[int], crop_size: Sequence[int], per_axis: int, body_grid: BodyGrid
) -> np.ndarray:
    """``(n, 3)`` deterministic origins of the crops a volume is embedded from (retrieval, zero-shot, inference).

    The training rule without its randomness: the body's bounding box (``body_grid``, the volume's
    :class:`BodyGrid`; the whole volume when it has no body) is split into ``per_axis`` cells along each axis and a
    crop is centred on each cell's centre, then shifted inside the volume. An axis the crop already spans whole
    gets one position, so ``n = per_axis**3`` unless the crop covers the volume along some axis (a function of the
    shapes only, so volumes of one shape batch together). Crops overlap where the box is smaller than
    ``per_axis`` crops; none is centred outside the body's box, so none is mostly the air around the patient.
    """
    cells = [per_axis if size > crop else 1 for size, crop in zip(shape, crop_size)]
    return _clamp_origins(_cell_centres(body_grid.low, body_grid.high, cells), shape, crop_size)


def read_crops(
    volume: np.ndarray, origins: np.ndarray, crop_size: Sequence[int], pad_value: float = 0.0, dtype=None
) -> np.ndarray:
    """``(K, *crop_size)`` crops at ``origins`` ``(K, 3)`` copied once out of ``volume`` (an array or a read-only
    memmap) into one new array, padded with ``pad_value`` where a crop does not fit.

    ``dtype`` None keeps the volume's own (the cache's float16): the loader hands float16 crops on and the trainer
    converts them on its device, where it costs nothing; numpy's float16 -> float32 conversion costs several times
    the copy (``benchmarks/subvolume_loading.py``)."""
    crop_size = tuple(int(c) for c in crop_size)
    crops = np.empty((len(origins), *crop_size), dtype=dtype if dtype is not None else volume.dtype)
    for crop, origin in zip(crops, origins):
        window = tuple(slice(int(o), int(o) + c) for o, c in zip(origin, crop_size))
        source = volume[window]
        if source.shape != crop_size:
            crop.fill(pad_value)
        crop[tuple(slice(0, n) for n in source.shape)] = source
    return crops
