"""Image-report pairs: reading a datalist (MONAI JSON or a BIMCV-R style CSV) and the crop dataset built on it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from custom.data.checks import check_report_text, read_report
from custom.data.datalist import dataset_base, read_split, row_location
from custom.data.volume_cache import CachedVolume, VolumeCache
from custom.errors import DataError
from custom.transforms.report_text import clean_report
from custom.transforms.subvolume import (
    SAMPLING_MODES,
    evaluation_crop_origins,
    read_crops,
    sample_crop_origins,
    stratified_crop_origins,
)

__all__ = ["load_pairs", "PairsDataset"]


def load_pairs(datalist: str, dataset_dir: str | None = None, split: str = "training") -> list[dict]:
    """Rows ``{"image": absolute path, "report": cleaned text, "patient_id", "study_id", ...}`` of one split.

    ``datalist`` is a JSON file with a list per split (MONAI's ``training``/``validation`` form) or a CSV with
    ``path`` and ``Report_en`` columns (optional ``split``, ``patient_id``), read by
    :func:`custom.data.datalist.read_split`. Relative image paths are resolved against ``dataset_dir`` (default: the
    datalist's folder), and so are ``.txt`` report paths (read as UTF-8). Every row is checked now: a missing image,
    a missing or non-UTF-8 report file or an empty report stops with one line naming the row.
    """
    base = dataset_base(datalist, dataset_dir)
    checked = []
    label_length = None
    for index, row in enumerate(read_split(datalist, split, dataset_dir)):
        where = row_location(datalist, split, index)
        if "report" not in row:
            raise DataError(f"{where}: expected key 'report', found keys {sorted(row)}")
        if not isinstance(row["image"], str):
            found = f"a list of {len(row['image'])}: {row['image'][:2]}"
            raise DataError(
                f"{where}: 'image': expected one image file path (pre-training is single-channel), found {found}"
            )
        if "label_vector" in row:
            label_length = label_length if label_length is not None else len(row["label_vector"])
            if len(row["label_vector"]) != label_length:
                raise DataError(
                    f"{where}: 'label_vector': expected {label_length} values (as the split's first labelled row), "
                    f"found {len(row['label_vector'])}"
                )
        report = clean_report(read_report(row["report"], base, where))
        check_report_text(report, where)
        checked.append({**row, "report": report})
    return checked


class PairsDataset(Dataset):
    """Crops and reports for T3D.

    Item: ``image`` ``(K, 1, *crop_size)`` float16 crops at the cached (native) resolution (the trainers and evaluators
    convert them to float32 on their device: half the bytes through workers and host-to-device copies), ``index`` int,
    and when the rows have reports: ``report`` str; when every row has one, ``label_vector`` ``(C,)`` float32 (the
    finding labels TCL's ``"labels"`` report affinity compares). Rows without reports (inference on images only) give
    images only.
    Training mode draws ``crops_per_volume`` random crops per call, ``sampling="stratified"`` (default: each in a
    different cell of the body's bounding box, anywhere in it or, with ``crop_jitter``, at most that many voxels from
    its centre: :func:`~custom.transforms.subvolume.stratified_crop_origins`) or
    ``"independent"`` (each centred on a body voxel with probability ``foreground_prob``); with ``eval_grid=n`` it
    returns the same ``n**3`` crops every time, centred on the cells of an ``n``-per-axis grid over the body's
    bounding box (evaluation, retrieval, zero-shot and inference:
    :func:`~custom.transforms.subvolume.evaluation_crop_origins`).
    """

    def __init__(
        self,
        rows: Sequence[dict],
        cache: VolumeCache,
        crop_size: Sequence[int] = (96, 96, 96),
        crops_per_volume: int = 4,
        foreground_prob: float = 0.9,
        eval_grid: int | None = None,
        sampling: str = "stratified",
        crop_jitter: int | None = None,
        prepare: bool = True,
    ) -> None:
        self.rows = list(rows)
        self.cache = cache
        self.crop_size = tuple(int(c) for c in crop_size)
        self.crops_per_volume = crops_per_volume
        self.foreground_prob = foreground_prob
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling: expected one of {list(SAMPLING_MODES)}, found {sampling!r}")
        self.sampling = sampling
        self.crop_jitter = crop_jitter
        self.eval_grid = eval_grid
        self.has_reports = all("report" in r for r in self.rows)
        self.label_vectors = None
        if self.rows and all("label_vector" in r for r in self.rows):
            lengths = {len(r["label_vector"]) for r in self.rows}
            if len(lengths) != 1:
                raise DataError(f"label_vector: expected one length in every row, found lengths {sorted(lengths)}")
            self.label_vectors = np.asarray([r["label_vector"] for r in self.rows], dtype=np.float32)
        if prepare:
            cache.prepare([r["image"] for r in self.rows])

    def __len__(self) -> int:
        return len(self.rows)

    def crop_origins(self, volume: CachedVolume) -> np.ndarray:
        """``(K, 3)`` origins of this call's crops of ``volume``."""
        volume_shape = volume.array.shape
        if self.eval_grid:
            return evaluation_crop_origins(volume_shape, self.crop_size, self.eval_grid, volume.body_grid)
        # seeded from torch so DataLoader workers differ and monai.utils.set_determinism makes runs repeatable
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,)).item()))
        if self.sampling == "stratified":
            return stratified_crop_origins(
                volume_shape, self.crop_size, volume.foreground, self.crops_per_volume, rng, self.crop_jitter,
                volume.body_grid,
            )  # fmt: skip
        return sample_crop_origins(
            volume_shape, self.crop_size, volume.foreground, self.crops_per_volume, self.foreground_prob, rng
        )

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        volume = self.cache.load(row["image"])
        origins = self.crop_origins(volume)
        crops = read_crops(volume.array, origins, self.crop_size)[:, None]
        item = {"image": torch.from_numpy(crops), "index": index}
        if self.has_reports:
            item["report"] = row["report"]
        if self.label_vectors is not None:
            item["label_vector"] = torch.from_numpy(self.label_vectors[index])
        return item
