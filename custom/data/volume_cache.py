"""Decode and preprocess each volume once; afterwards crops are sliced from a memory-mapped array.

Reading a 96^3 crop from a 512x512x300 CT then costs a copy of the crop's bytes instead of a gzip decode, a
reorientation and an intensity transform of the whole volume (see ``benchmarks/subvolume_loading.py``).

Per volume the cache holds ``<key>.npy`` (preprocessed float16, RAS), ``<key>.fg.npy`` (up to
``max_foreground_points`` body voxel coordinates, int32 ``(M, 3)``) and ``<key>.json`` (source, shape, affine).
``key`` hashes the source path, its size and mtime and the preprocessing fingerprint. Files are written to a
temporary name and renamed, so concurrent workers or ranks never read half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
import torch.distributed as dist

from custom.data.checks import load_nifti_checked
from custom.transforms.preprocessing import VolumePreprocessing

__all__ = ["CachedVolume", "VolumeCache"]


@dataclass
class CachedVolume:
    """``array`` ``(X, Y, Z)`` float16 memmap (preprocessed, RAS), ``foreground`` ``(M, 3)`` int32, ``affine`` (4, 4)."""

    array: np.ndarray
    foreground: np.ndarray
    affine: np.ndarray


def _atomic_save_npy(path: str, array: np.ndarray) -> None:
    tmp = f"{path}.tmp{os.getpid()}.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


class VolumeCache:
    """Args:
        cache_dir: folder for the cached arrays (created if missing).
        preprocessing: the shared chain; its fingerprint is part of every key.
        body_threshold: preprocessed intensity above which a voxel counts as body (0.25 = -500 HU with the
            default CT window), used to bias crops to the body.
        max_foreground_points: body voxels kept per volume (a random, seeded subset) to draw crop centres from.
    """

    def __init__(
        self,
        cache_dir: str,
        preprocessing: VolumePreprocessing,
        body_threshold: float = 0.25,
        max_foreground_points: int = 50000,
    ) -> None:
        self.cache_dir = cache_dir
        self.preprocessing = preprocessing
        self.body_threshold = body_threshold
        self.max_foreground_points = max_foreground_points
        os.makedirs(cache_dir, exist_ok=True)

    def key(self, path: str) -> str:
        stat = os.stat(path)
        ident = f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{self.preprocessing.fingerprint()}|{self.body_threshold}"
        return hashlib.sha1(ident.encode()).hexdigest()

    def _paths(self, path: str) -> tuple[str, str, str]:
        stem = os.path.join(self.cache_dir, self.key(path))
        return f"{stem}.npy", f"{stem}.fg.npy", f"{stem}.json"

    def is_cached(self, path: str) -> bool:
        return all(os.path.isfile(p) for p in self._paths(path))

    def build(self, path: str) -> None:
        """Decode, check and preprocess ``path`` once and write its cache entry."""
        array_path, fg_path, meta_path = self._paths(path)
        array, affine = load_nifti_checked(path)
        volume, affine = self.preprocessing(array, affine)
        body = np.argwhere(volume > self.body_threshold).astype(np.int32)
        if len(body) > self.max_foreground_points:
            rng = np.random.default_rng(0)
            body = body[rng.choice(len(body), self.max_foreground_points, replace=False)]
        _atomic_save_npy(array_path, volume.astype(np.float16))
        _atomic_save_npy(fg_path, body)
        tmp = f"{meta_path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"source": os.path.abspath(path), "shape": list(volume.shape), "affine": affine.tolist()}, f)
        os.replace(tmp, meta_path)

    def prepare(self, paths: list[str], progress: bool = True) -> None:
        """Build every missing entry (rank 0 only under DDP; the others wait), with a progress bar."""
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            dist.barrier()
            return
        missing = [p for p in dict.fromkeys(paths) if not self.is_cached(p)]
        if missing:
            from tqdm import tqdm

            for path in tqdm(missing, desc="caching volumes", unit="vol", disable=not progress):
                self.build(path)
        if dist.is_available() and dist.is_initialized():
            dist.barrier()

    def load(self, path: str) -> CachedVolume:
        if not self.is_cached(path):
            self.build(path)
        array_path, fg_path, meta_path = self._paths(path)
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        return CachedVolume(
            array=np.load(array_path, mmap_mode="r"), foreground=np.load(fg_path), affine=np.asarray(meta["affine"])
        )
