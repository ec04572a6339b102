"""BraTS 2021 (RSNA-ASNR-MICCAI) training data: datalist reader and synthetic miniature writer.

Layout (as downloaded, one folder per case)::

    BraTS2021_00000/BraTS2021_00000_flair.nii.gz  _t1.nii.gz  _t1ce.nii.gz  _t2.nii.gz  _seg.nii.gz

Labels 0 background / 1 necrotic tumour core / 2 peritumoral edema / 4 enhancing tumour. Rows list the four
modalities in :data:`custom.data.synthetic_mr.MR_MODALITIES` order (FLAIR, T1, T1ce, T2, the Decathlon Task01
order), so a network trained on either source sees the same channels. Commands::

    python -m custom.data.seg_datasets.brats prepare --dataset_dir /data/BraTS2021_Training_Data
    python -m custom.data.seg_datasets.brats miniature --dataset_dir /tmp/brats_mini
"""

from __future__ import annotations

import glob
import os

import numpy as np

from custom.data.checks import DataError
from custom.data.seg_datasets.common import ensure_dataset, split_validation, write_datalist, write_nifti
from custom.data.synthetic_mr import BRATS_LABELS, MR_MODALITIES, render_brain_phantom

__all__ = ["case_row", "build_datalist", "prepare", "write_miniature", "ensure_miniature"]

DATALIST_NAME = "datalist.json"


def _find(case_dir: str, case: str, suffix: str) -> str | None:
    matches = sorted(glob.glob(os.path.join(case_dir, f"{case}_{suffix}.nii*")))
    return matches[0] if matches else None


def case_row(case_dir: str, dataset_dir: str, require_label: bool = True) -> dict:
    """One datalist row for a case folder; a missing modality or segmentation is a :class:`DataError`."""
    case = os.path.basename(os.path.normpath(case_dir))
    images = []
    for modality in MR_MODALITIES:
        path = _find(case_dir, case, modality)
        if path is None:
            raise DataError(f"{case_dir}: expected modality '{modality}' ({case}_{modality}.nii.gz), found none")
        images.append(os.path.relpath(path, dataset_dir))
    row = {"image": images, "patient_id": case, "tumour_label_scheme": "brats"}
    label = _find(case_dir, case, "seg")
    if label is not None:
        row["label"] = os.path.relpath(label, dataset_dir)
    elif require_label:
        raise DataError(f"{case_dir}: expected the segmentation {case}_seg.nii.gz, found none")
    return row


def build_datalist(dataset_dir: str, val_fraction: float = 0.2, seed: int = 0) -> dict:
    """``{"training", "validation"}`` rows from the case folders, with a seeded patient-level validation split."""
    case_dirs = sorted(d for d in glob.glob(os.path.join(dataset_dir, "*")) if os.path.isdir(d))
    if not case_dirs:
        raise DataError(f"{dataset_dir}: expected BraTS case folders (BraTS2021_XXXXX/), found none")
    rows = [case_row(d, dataset_dir) for d in case_dirs]
    validation = split_validation([r["patient_id"] for r in rows], val_fraction, seed)
    return {
        "description": f"BraTS 2021 training data (seeded validation split, seed {seed})",
        "labels": {"0": "background", **{str(k): v for k, v in BRATS_LABELS.items()}},
        "modality": dict(enumerate(MR_MODALITIES)),
        "training": [r for r in rows if r["patient_id"] not in validation],
        "validation": [r for r in rows if r["patient_id"] in validation],
    }


def prepare(dataset_dir: str, val_fraction: float = 0.2, seed: int = 0) -> str:
    """Write ``datalist.json`` and its 1 / 10 / 100 % label-fraction datalists into ``dataset_dir``."""
    datalist = build_datalist(dataset_dir, val_fraction, seed)
    return write_datalist(datalist, os.path.join(dataset_dir, DATALIST_NAME), seed=seed)


def write_miniature(
    dataset_dir: str,
    num_cases: int = 10,
    shape: tuple[int, int, int] = (32, 32, 32),
    spacing: tuple[float, float, float] = (6.0, 6.0, 6.0),
    seed: int = 0,
) -> str:
    """Write ``num_cases`` synthetic 4-modality brain MRs with BraTS labels in the BraTS 2021 layout, plus datalists."""
    for index in range(num_cases):
        case = f"BraTS2021_{index:05d}"
        phantom = render_brain_phantom(shape, spacing, seed=seed * 1000 + index)
        for channel, modality in enumerate(MR_MODALITIES):
            path = os.path.join(dataset_dir, case, f"{case}_{modality}.nii.gz")
            write_nifti(phantom.image[channel], phantom.affine, path)
        write_nifti(phantom.label, phantom.affine, os.path.join(dataset_dir, case, f"{case}_seg.nii.gz"))
    return prepare(dataset_dir, seed=seed)


def ensure_miniature(dataset_dir: str, num_cases: int = 10, seed: int = 0) -> str:
    """The miniature's ``datalist.json``, writing the miniature first if it is missing (safe under DDP)."""
    return ensure_dataset(dataset_dir, DATALIST_NAME, lambda folder: write_miniature(folder, num_cases, seed=seed))


if __name__ == "__main__":
    import fire

    fire.Fire({"prepare": prepare, "miniature": write_miniature})
