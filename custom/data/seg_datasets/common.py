"""Pieces shared by the segmentation dataset readers and miniature writers (BTCV, MSD, BraTS).

A *datalist* is the MONAI JSON form: ``{"training": [row, ...], "validation": [row, ...], ...}`` where a row is
``{"image": path | [path, ...], "label": path, "patient_id": str}``; paths may be relative to the dataset folder.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence

import nibabel as nib
import numpy as np

from custom.data.datalist import read_split
from custom.data.label_fractions import label_fraction_subsets, write_label_fraction_datalists
from custom.errors import DataError

__all__ = ["write_nifti", "split_validation", "write_datalist", "load_split", "ensure_dataset"]

_PATH_KEYS = ("image", "label")


def write_nifti(array: np.ndarray, affine: np.ndarray, path: str) -> None:
    """Write ``array`` (spatial dims first, channels last for 4D) as a gzipped NIfTI with ``affine``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64))
    image.header.set_xyzt_units("mm")
    nib.save(image, path)


def split_validation(patient_ids: Sequence[str], val_fraction: float = 0.2, seed: int = 0) -> set[str]:
    """Seeded, patient-level choice of ``ceil(val_fraction * n)`` validation patients (at least one, never all)."""
    patients = sorted(set(patient_ids))
    if len(patients) < 2:
        raise DataError(f"expected at least 2 patients to split into training and validation, found {len(patients)}")
    count = min(len(patients) - 1, max(1, math.ceil(val_fraction * len(patients))))
    order = np.random.default_rng(seed).permutation(len(patients))
    return {patients[i] for i in order[:count]}


def write_datalist(datalist: dict, path: str, fractions: Sequence[float] = (0.01, 0.1, 1.0), seed: int = 0) -> str:
    """Write ``datalist`` to ``path`` and, next to it, the nested label-fraction datalists ``<stem>_frac<pct>.json``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(datalist, f, indent=1)
    if fractions:
        write_label_fraction_datalists(path, fractions=fractions, seed=seed)
    return path


def load_split(
    datalist: str, split: str = "training", dataset_dir: str | None = None, label_fraction: float = 1.0, seed: int = 0
) -> list[dict]:
    """Rows of ``split`` with absolute, existing ``image`` and ``label`` paths and a ``patient_id``
    (:func:`custom.data.datalist.read_split`); for ``label_fraction < 1`` the nested seeded patient subset.

    Relative paths resolve against ``dataset_dir`` (default: the datalist's folder), as in MONAI's ``dataset_0.json``.
    The subset equals the ``<stem>_frac<pct>.json`` file that :func:`write_datalist` writes for the same seed.
    """
    if not os.path.isfile(datalist):
        raise DataError(f"{datalist}: datalist not found; write it with the data set's `prepare` command (see docs)")
    rows = read_split(datalist, split, dataset_dir, path_keys=_PATH_KEYS)
    if label_fraction < 1.0:
        rows = label_fraction_subsets(rows, fractions=(label_fraction,), seed=seed)[label_fraction]
    return rows


def ensure_dataset(dataset_dir: str, datalist_name: str, writer: Callable[[str], None]) -> str:
    """``dataset_dir/datalist_name``, first writing the data set with ``writer(folder)`` if it is not there yet.

    The writer fills a temporary sibling folder that is then renamed into place, so concurrent callers (one per DDP
    rank) never see a half-written data set: the first rename wins and later writers discard their copy.
    """
    datalist = os.path.join(dataset_dir, datalist_name)
    if os.path.isfile(datalist):
        return datalist
    parent = os.path.dirname(os.path.abspath(dataset_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".staging_", dir=parent)
    try:
        writer(staging)
        try:
            os.rename(staging, dataset_dir)
        except OSError:
            if not os.path.isfile(datalist):  # the folder exists for another reason: do not hide that
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return datalist
