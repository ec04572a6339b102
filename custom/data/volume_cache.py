"""Decode and preprocess each volume once; afterwards crops are sliced from a memory-mapped array.

Reading a 96^3 crop from a 512x512x300 CT then costs a copy of the crop's bytes instead of a gzip decode, a
reorientation and an intensity transform of the whole volume (see ``benchmarks/subvolume_loading.py``).

Per volume the cache holds ``<key>.npy`` (preprocessed float16, RAS), ``<key>.fg.npy`` (up to
``max_foreground_points`` body voxel coordinates, int32 ``(M, 3)``, drawn uniformly from the patient outline with
the lungs it encloses (:func:`~custom.transforms.body_mask.body_mask`), sorted by their cell of a grid over the body:
:class:`~custom.transforms.subvolume.BodyGrid`) and ``<key>.json`` (source, shape, affine, the body grid's box and
cell offsets). ``key`` hashes the source path, its size and mtime, the preprocessing fingerprint and the cache
format. Files are written to a temporary name and renamed, so concurrent workers, ranks or nodes never read half a
file; the JSON is written last, so a volume whose JSON exists is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from custom.distributed import main_process_first
from custom.transforms.body_mask import body_mask
from custom.transforms.preprocessing import VolumePreprocessing
from custom.transforms.subvolume import BodyGrid
from custom.transforms.volume_checks import load_nifti_checked

__all__ = ["CachedVolume", "VolumeCache"]

#: bumped whenever the files' layout or meaning changes, so an old cache is rebuilt instead of misread
#: (3: the body is the patient outline with the lungs it encloses, no longer the voxels above the threshold)
CACHE_FORMAT = 3


@dataclass
class CachedVolume:
    """``array`` ``(X, Y, Z)`` float16 memmap (preprocessed, RAS), ``body_grid`` its body voxels sorted by cell,
    ``affine`` (4, 4)."""

    array: np.ndarray
    body_grid: BodyGrid
    affine: np.ndarray

    @property
    def foreground(self) -> np.ndarray:
        """``(M, 3)`` int32 body voxel coordinates (crop centres are drawn from them)."""
        return self.body_grid.points


def _atomic_save_npy(path: str, array: np.ndarray) -> None:
    tmp = f"{path}.tmp{os.getpid()}.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


class VolumeCache:
    """Args:
    cache_dir: folder for the cached arrays (created if missing).
    preprocessing: the shared chain; its fingerprint is part of every key.
    body_threshold: preprocessed intensity above which a voxel is tissue (0.25 = -500 HU with the default CT
        window). The body is the patient outline this tissue draws, with the lungs and gas it encloses
        (:func:`~custom.transforms.body_mask.body_mask`); crops are placed over it in training and evaluation.
    max_foreground_points: body voxels kept per volume (a uniform, seeded subset) to draw crop centres from.
    max_open: volumes whose memory maps this process keeps open (least recently used closed first). A crop read
        through a fresh map pays a page fault per 4 KiB page it touches, about as much as the copy itself
        (``benchmarks/subvolume_loading.py``); each open volume holds two file descriptors.
    """

    def __init__(
        self,
        cache_dir: str,
        preprocessing: VolumePreprocessing,
        body_threshold: float = 0.25,
        max_foreground_points: int = 50000,
        max_open: int = 128,
    ) -> None:
        self.cache_dir = cache_dir
        self.preprocessing = preprocessing
        self.body_threshold = body_threshold
        self.max_foreground_points = max_foreground_points
        self.max_open = max_open
        self._open: OrderedDict[str, CachedVolume] = OrderedDict()
        os.makedirs(cache_dir, exist_ok=True)

    def key(self, path: str) -> str:
        stat = os.stat(path)
        ident = (
            f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{self.preprocessing.fingerprint()}"
            f"|{self.body_threshold}|{CACHE_FORMAT}"
        )
        return hashlib.sha1(ident.encode()).hexdigest()

    def _paths(self, path: str) -> tuple[str, str, str]:
        stem = os.path.join(self.cache_dir, self.key(path))
        return f"{stem}.npy", f"{stem}.fg.npy", f"{stem}.json"

    def is_cached(self, path: str) -> bool:
        return os.path.isfile(self._paths(path)[2])  # the JSON is written last

    def build(self, path: str) -> None:
        """Decode, check and preprocess ``path`` once and write its cache entry."""
        array_path, fg_path, meta_path = self._paths(path)
        array, affine = load_nifti_checked(path)
        volume, affine = self.preprocessing(array, affine)
        spacing = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(0))
        body = body_mask(volume, self.body_threshold, spacing).sample(
            self.max_foreground_points, np.random.default_rng(0)
        )
        grid = BodyGrid.build(volume.shape, body)
        # C order: nibabel hands Fortran-ordered arrays, and crops copied out of one into C-ordered batches are
        # transposed on the fly (~10x slower than a straight copy)
        _atomic_save_npy(array_path, np.ascontiguousarray(volume, dtype=np.float16))
        _atomic_save_npy(fg_path, grid.points)
        meta = {
            "source": os.path.abspath(path), "shape": list(volume.shape), "affine": affine.tolist(),
            "body_low": grid.low.tolist(), "body_high": grid.high.tolist(), "body_cells": grid.cells,
            "body_offsets": grid.offsets.tolist(),
        }  # fmt: skip
        tmp = f"{meta_path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(meta, f)
        os.replace(tmp, meta_path)

    def prepare(self, paths: list[str], progress: bool = True) -> None:
        """Build every missing entry, with a progress bar. Under ``torchrun``, rank 0 builds first, then the first
        process of each other node builds what its node cannot see (nothing on a shared filesystem), then the
        others find every entry ready (:func:`~custom.distributed.main_process_first`)."""
        main_process_first(self._build_missing)(paths, progress)

    def _build_missing(self, paths: list[str], progress: bool) -> None:
        missing = [p for p in dict.fromkeys(paths) if not self.is_cached(p)]
        if missing:
            from tqdm import tqdm

            for path in tqdm(missing, desc="caching volumes", unit="vol", disable=not progress):
                self.build(path)

    def load(self, path: str) -> CachedVolume:
        """``path``'s entry, memory-mapped (built first when missing): no voxel is read until a crop is cut. The
        maps of the last ``max_open`` volumes stay open, so pages already touched cost nothing the next time."""
        volume = self._open.get(path)
        if volume is not None:
            self._open.move_to_end(path)
            return volume
        volume = self._map(path)
        self._open[path] = volume
        if len(self._open) > self.max_open:
            self._open.popitem(last=False)
        return volume

    def _map(self, path: str) -> CachedVolume:
        array_path, fg_path, meta_path = self._paths(path)
        try:
            with open(meta_path, encoding="utf-8") as f:
                meta = json.load(f)
        except FileNotFoundError:
            self.build(path)
            return self._map(path)
        grid = BodyGrid(
            points=np.load(fg_path, mmap_mode="r"),
            low=np.asarray(meta["body_low"]),
            high=np.asarray(meta["body_high"]),
            cells=int(meta["body_cells"]),
            offsets=np.asarray(meta["body_offsets"], dtype=np.int64),
        )
        return CachedVolume(array=np.load(array_path, mmap_mode="r"), body_grid=grid, affine=np.asarray(meta["affine"]))
