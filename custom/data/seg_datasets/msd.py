"""Medical Segmentation Decathlon tasks read from their ``dataset.json``: Task06_Lung and Task01_BrainTumour.

Layout (as downloaded)::

    TaskXX_Name/dataset.json   {"modality": {...}, "labels": {...}, "training": [{"image": "./imagesTr/x.nii.gz",
                                "label": "./labelsTr/x.nii.gz"}, ...], "test": ["./imagesTs/y.nii.gz", ...]}
    TaskXX_Name/imagesTr/  labelsTr/  imagesTs/

Task06 images are single-channel CT with labels 0 background / 1 cancer. Task01 images are 4D (X, Y, Z, 4) in the
order FLAIR, T1w, t1gd, T2w with labels 0 background / 1 edema / 2 non-enhancing tumour / 3 enhancing tumour (not the
BraTS numbering: rows carry ``tumour_label_scheme: "msd_task01"`` so :mod:`custom.transforms.brats_labels` maps them).
The Decathlon has no validation split: ``prepare`` draws a seeded patient-level one. Commands::

    python -m custom.data.seg_datasets.msd prepare --dataset_dir /data/Task06_Lung   # datalist.json + _frac*.json
    python -m custom.data.seg_datasets.msd lung_miniature --dataset_dir /tmp/Task06_mini
    python -m custom.data.seg_datasets.msd brain_miniature --dataset_dir /tmp/Task01_mini
"""

from __future__ import annotations

import json
import os

import numpy as np

from custom.data.datalist import patient_id_of, read_datalist
from custom.data.seg_datasets.common import ensure_dataset, split_validation, write_datalist, write_nifti
from custom.data.synthetic_ct import FINDING_NAMES, Finding, render_phantom
from custom.data.synthetic_mr import render_brain_phantom
from custom.errors import DataError

__all__ = ["build_datalist", "prepare", "write_lung_miniature", "write_brain_miniature", "ensure_lung_miniature"]

DATALIST_NAME = "datalist.json"
# dataset.json "name" -> label numbering; Task01_BrainTumour is named "BRATS" but does not use the BraTS numbering
_LABEL_SCHEMES = {"BRATS": "msd_task01"}
_TUMOUR_CODES = (1 + FINDING_NAMES.index("nodule"), 1 + FINDING_NAMES.index("mass"))


def _read_dataset_json(dataset_dir: str) -> dict:
    path = os.path.join(dataset_dir, "dataset.json")
    if not os.path.isfile(path):
        raise DataError(f"{dataset_dir}: expected a Decathlon dataset.json, found none")
    content = read_datalist(path)
    for key in ("training", "labels", "modality"):
        if key not in content:
            raise DataError(f"{path}: expected a '{key}' entry, found keys {sorted(content)}")
    return content


def build_datalist(dataset_dir: str, val_fraction: float = 0.2, seed: int = 0) -> dict:
    """``{"training", "validation", "test", "labels", "modality"}`` from ``dataset.json`` (paths relative)."""
    content = _read_dataset_json(dataset_dir)
    scheme = _LABEL_SCHEMES.get(str(content.get("name", "")), None)
    rows = []
    for entry in content["training"]:
        row = {
            "image": os.path.normpath(entry["image"]),
            "label": os.path.normpath(entry["label"]),
            "patient_id": patient_id_of({"image": entry["image"]}),
        }
        rows.append({**row, "tumour_label_scheme": scheme} if scheme else row)
    validation = split_validation([r["patient_id"] for r in rows], val_fraction, seed)
    return {
        "description": f"{content.get('name', os.path.basename(dataset_dir))} (seeded validation split, seed {seed})",
        "labels": content["labels"],
        "modality": content["modality"],
        "training": [r for r in rows if r["patient_id"] not in validation],
        "validation": [r for r in rows if r["patient_id"] in validation],
        "test": [os.path.normpath(p) for p in content.get("test", [])],
    }


def prepare(dataset_dir: str, val_fraction: float = 0.2, seed: int = 0) -> str:
    """Write ``datalist.json`` (train / validation / test) and its 1 / 10 / 100 % label-fraction datalists."""
    datalist = build_datalist(dataset_dir, val_fraction, seed)
    return write_datalist(datalist, os.path.join(dataset_dir, DATALIST_NAME), seed=seed)


def _write_dataset_json(
    dataset_dir: str, name: str, modality: dict, labels: dict, cases: list[str], tests: list[str]
) -> None:
    content = {
        "name": name,
        "description": "synthetic miniature in the Medical Segmentation Decathlon layout",
        "tensorImageSize": "4D" if len(modality) > 1 else "3D",
        "modality": modality,
        "labels": labels,
        "numTraining": len(cases),
        "numTest": len(tests),
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases],
        "test": [f"./imagesTs/{c}.nii.gz" for c in tests],
    }
    with open(os.path.join(dataset_dir, "dataset.json"), "w", encoding="utf-8") as f:
        json.dump(content, f, indent=1)


def write_lung_miniature(
    dataset_dir: str,
    num_cases: int = 10,
    num_test: int = 1,
    shape: tuple[int, int, int] = (32, 32, 32),
    spacing: tuple[float, float, float] = (12.0, 12.0, 12.0),
    seed: int = 0,
) -> str:
    """Task06_Lung stand-in: chest CTs each with one lung tumour (a mass or a nodule), label 1 = tumour."""
    rng = np.random.default_rng(seed)
    names = [f"lung_{i:03d}" for i in range(1, num_cases + num_test + 1)]
    for index, name in enumerate(names):
        kind = "mass" if rng.random() < 0.7 else "nodule"  # masses dominate Task06 (non-small-cell lung cancer)
        size = float(rng.integers(30, 50) if kind == "mass" else rng.integers(16, 24))
        finding = Finding(kind, str(rng.choice(["right", "left"])), str(rng.choice(["upper", "lower"])), size)
        phantom = render_phantom([finding], shape=shape, spacing=spacing, seed=seed * 1000 + index)
        folder = "imagesTr" if index < num_cases else "imagesTs"
        write_nifti(phantom.image, phantom.affine, os.path.join(dataset_dir, folder, f"{name}.nii.gz"))
        if index < num_cases:
            tumour = np.isin(phantom.finding_mask, _TUMOUR_CODES).astype(np.uint8)
            write_nifti(tumour, phantom.affine, os.path.join(dataset_dir, "labelsTr", f"{name}.nii.gz"))
    _write_dataset_json(
        dataset_dir, "Lung", {"0": "CT"}, {"0": "background", "1": "cancer"}, names[:num_cases], names[num_cases:]
    )
    return prepare(dataset_dir, seed=seed)


def write_brain_miniature(
    dataset_dir: str,
    num_cases: int = 10,
    shape: tuple[int, int, int] = (32, 32, 32),
    spacing: tuple[float, float, float] = (6.0, 6.0, 6.0),
    seed: int = 0,
) -> str:
    """Task01_BrainTumour stand-in: 4D (X, Y, Z, 4) FLAIR / T1w / t1gd / T2w images, Decathlon label numbering."""
    to_msd = np.zeros(5, dtype=np.uint8)
    to_msd[[1, 2, 4]] = [2, 1, 3]  # BraTS necrotic/non-enhancing 1 -> 2, edema 2 -> 1, enhancing 4 -> 3
    names = [f"BRATS_{i:03d}" for i in range(1, num_cases + 1)]
    for index, name in enumerate(names):
        phantom = render_brain_phantom(shape, spacing, seed=seed * 1000 + index)
        image_path = os.path.join(dataset_dir, "imagesTr", f"{name}.nii.gz")
        write_nifti(np.moveaxis(phantom.image, 0, -1), phantom.affine, image_path)  # Decathlon 4D: channels last
        write_nifti(to_msd[phantom.label], phantom.affine, os.path.join(dataset_dir, "labelsTr", f"{name}.nii.gz"))
    _write_dataset_json(
        dataset_dir,
        "BRATS",
        {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        names,
        [],
    )
    return prepare(dataset_dir, seed=seed)


def ensure_lung_miniature(dataset_dir: str, num_cases: int = 10, seed: int = 0) -> str:
    """The lung miniature's ``datalist.json``, writing the miniature first if it is missing (safe under DDP)."""
    return ensure_dataset(dataset_dir, DATALIST_NAME, lambda folder: write_lung_miniature(folder, num_cases, seed=seed))


if __name__ == "__main__":
    import fire

    fire.Fire({"prepare": prepare, "lung_miniature": write_lung_miniature, "brain_miniature": write_brain_miniature})
