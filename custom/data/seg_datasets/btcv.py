"""BTCV (Multi-Atlas Labeling Beyond the Cranial Vault, abdomen): datalist reader and synthetic miniature writer.

On-disk layouts read (as users download them):

- ``imagesTr/img0001.nii.gz`` + ``labelsTr/label0001.nii.gz`` (the MONAI / Swin UNETR tutorial layout), or
- ``RawData/Training/img/img0001.nii.gz`` + ``RawData/Training/label/label0001.nii.gz`` (the Synapse archive).

The datalist is MONAI's ``dataset_0.json`` form with its 24 / 6 split: cases 35..40 are validation. Labels are the
13 BTCV organ ids (0 background). Commands::

    python -m custom.data.seg_datasets.btcv prepare --dataset_dir /data/BTCV      # dataset_0.json + _frac*.json
    python -m custom.data.seg_datasets.btcv miniature --dataset_dir /tmp/btcv_mini  # synthetic stand-in
"""

from __future__ import annotations

import glob
import math
import os
import re

import numpy as np

from custom.data.seg_datasets.common import ensure_dataset, write_datalist, write_nifti
from custom.data.synthetic_ct import BTCV_ORGANS, render_phantom
from custom.errors import DataError

__all__ = [
    "BTCV_CASE_IDS",
    "BTCV_VALIDATION_IDS",
    "TOTALSEGMENTATOR_TO_BTCV",
    "build_datalist",
    "prepare",
    "write_miniature",
    "ensure_miniature",
    "totalsegmentator_to_btcv",
]

#: the 30 labelled BTCV training cases and MONAI's dataset_0.json validation cases among them
BTCV_CASE_IDS: tuple[int, ...] = (*range(1, 11), *range(21, 41))
BTCV_VALIDATION_IDS: frozenset[int] = frozenset(range(35, 41))
#: BTCV organ id <- TotalSegmentator "total" class id (every other TotalSegmentator id is background for BTCV)
# fmt: off
TOTALSEGMENTATOR_TO_BTCV: dict[int, int] = {
    1: 1, 2: 2, 3: 3, 4: 4, 15: 5, 5: 6, 6: 7, 52: 8, 63: 9, 64: 10, 7: 11, 8: 12, 9: 13
}
# fmt: on
DATALIST_NAME = "dataset_0.json"
# Portal-venous-phase HU per BTCV organ (BTCV scans are contrast-enhanced): the miniature repaints the phantom's
# unenhanced organs with these, so organs differ in intensity as they do in the real data, not only in position
# fmt: off
_PORTAL_VENOUS_HU: dict[int, float] = {
    1: 120.0, 2: 180.0, 3: 180.0, 4: 10.0, 5: 45.0, 6: 105.0, 7: 25.0,
    8: 170.0, 9: 140.0, 10: 160.0, 11: 85.0, 12: 55.0, 13: 55.0,
}
# fmt: on
# the abdomen (kidneys to diaphragm) starts 0.1 of the way up the phantom: in units of the slab height / 10
_ABDOMEN_START = 2
_LAYOUTS = (
    ("imagesTr", "labelsTr"),
    (os.path.join("RawData", "Training", "img"), os.path.join("RawData", "Training", "label")),
)


def _case_number(path: str) -> int | None:
    match = re.search(r"(\d+)\.nii(\.gz)?$", os.path.basename(path))
    return int(match.group(1)) if match else None


def build_datalist(dataset_dir: str) -> dict:
    """``{"training", "validation"}`` rows (paths relative to ``dataset_dir``) from either BTCV layout."""
    for layout in _LAYOUTS:
        image_dir, label_dir = layout  # label_dir is read after the loop, for the layout that has images
        images = sorted(glob.glob(os.path.join(dataset_dir, image_dir, "img*.nii*")))
        if images:
            break
    else:
        raise DataError(f"{dataset_dir}: expected BTCV images in imagesTr/ or RawData/Training/img/, found none")
    rows = []
    for image in images:
        number = _case_number(image)
        if number is None:
            raise DataError(f"{image}: expected a BTCV image name imgNNNN.nii.gz, found {os.path.basename(image)}")
        labels = glob.glob(os.path.join(dataset_dir, label_dir, f"label{number:04d}.nii*"))
        if not labels:
            raise DataError(f"{image}: expected its label {label_dir}/label{number:04d}.nii.gz, found none")
        rows.append(
            {
                "image": os.path.relpath(image, dataset_dir),
                "label": os.path.relpath(labels[0], dataset_dir),
                "patient_id": f"btcv{number:04d}",
            }
        )
    numbers = [_case_number(r["image"]) for r in rows]
    # the published split when those cases exist, else the same proportion (1 in 5) from the end
    val_ids = set(numbers) & BTCV_VALIDATION_IDS or set(numbers[-max(1, math.ceil(len(numbers) / 5)) :])
    return {
        "description": "BTCV abdomen, 13 organs (MONAI dataset_0.json split)",
        "labels": {"0": "background", **{str(k): v for k, v in BTCV_ORGANS.items()}},
        "training": [r for r, n in zip(rows, numbers) if n not in val_ids],
        "validation": [r for r, n in zip(rows, numbers) if n in val_ids],
    }


def prepare(dataset_dir: str, seed: int = 0) -> str:
    """Write ``dataset_0.json`` and its 1 / 10 / 100 % label-fraction datalists into ``dataset_dir``."""
    return write_datalist(build_datalist(dataset_dir), os.path.join(dataset_dir, DATALIST_NAME), seed=seed)


def write_miniature(
    dataset_dir: str,
    num_cases: int = 10,
    shape: tuple[int, int, int] = (32, 32, 32),
    spacing: tuple[float, float, float] = (12.0, 12.0, 8.0),
    seed: int = 0,
    layout: str = "imagesTr",
) -> str:
    """Write ``num_cases`` synthetic abdominal CTs with the 13 BTCV organ labels in a BTCV layout, plus datalists.

    Each case is the abdominal slab (``shape``) of a thorax-abdomen phantom twice as long in z, as BTCV scans cover
    the abdomen only. ``layout`` is ``"imagesTr"`` or ``"RawData"``. Cases take the real BTCV numbers
    (1..10, 21..40), so 30 cases reproduce the 24 / 6 split. Lungs, heart and spine of the phantom are background,
    as in BTCV.
    """
    if not 2 <= num_cases <= len(BTCV_CASE_IDS):
        raise ValueError(f"num_cases: expected 2..{len(BTCV_CASE_IDS)}, found {num_cases}")
    image_dir, label_dir = _LAYOUTS[0] if layout == "imagesTr" else _LAYOUTS[1]
    enhanced_hu = np.zeros(max(_PORTAL_VENOUS_HU) + 1, dtype=np.float32)
    enhanced_hu[list(_PORTAL_VENOUS_HU)] = list(_PORTAL_VENOUS_HU.values())
    noise = np.random.default_rng(seed)
    for index, number in enumerate(BTCV_CASE_IDS[:num_cases]):
        body_shape = (shape[0], shape[1], 2 * shape[2])
        phantom = render_phantom([], shape=body_shape, spacing=spacing, seed=seed * 1000 + index)
        abdomen = slice(_ABDOMEN_START * shape[2] // 10, _ABDOMEN_START * shape[2] // 10 + shape[2])
        labels = np.where(phantom.organs <= max(BTCV_ORGANS), phantom.organs, 0).astype(np.uint8)[..., abdomen]
        image = phantom.image[..., abdomen].astype(np.float32)
        organ_voxels = labels > 0
        image[organ_voxels] = enhanced_hu[labels[organ_voxels]] + noise.normal(0.0, 20.0, int(organ_voxels.sum()))
        image = image.astype(np.int16)
        affine = phantom.affine.copy()
        affine[2, 3] = abdomen.start * spacing[2]  # keep world positions of the cropped slab
        write_nifti(image, affine, os.path.join(dataset_dir, image_dir, f"img{number:04d}.nii.gz"))
        write_nifti(labels, affine, os.path.join(dataset_dir, label_dir, f"label{number:04d}.nii.gz"))
    return prepare(dataset_dir, seed=seed)


def ensure_miniature(dataset_dir: str, num_cases: int = 10, seed: int = 0) -> str:
    """The miniature's ``dataset_0.json``, writing the miniature first if it is missing (safe under DDP)."""
    return ensure_dataset(dataset_dir, DATALIST_NAME, lambda folder: write_miniature(folder, num_cases, seed=seed))


def totalsegmentator_to_btcv(labels: np.ndarray) -> np.ndarray:
    """Map a TotalSegmentator "total" label map to BTCV organ ids (unmapped classes become background)."""
    lookup = np.zeros(max(int(labels.max()), max(TOTALSEGMENTATOR_TO_BTCV)) + 1, dtype=np.uint8)
    for source, target in TOTALSEGMENTATOR_TO_BTCV.items():
        lookup[source] = target
    return lookup[np.asarray(labels, dtype=np.int64)]


if __name__ == "__main__":
    import fire

    fire.Fire({"prepare": prepare, "miniature": write_miniature})
