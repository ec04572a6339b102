"""BraTS training data in the 2021 and the 2023+ layouts: datalist reader and synthetic miniature writer.

Two layouts, one folder per case, told apart by their file names (:func:`detect_layout`)::

    BraTS 2021 (RSNA-ASNR-MICCAI):  BraTS2021_00000/BraTS2021_00000_flair.nii.gz  _t1  _t1ce  _t2  _seg
    BraTS 2023 and later:           BraTS-GLI-00000-000/BraTS-GLI-00000-000-t2f.nii.gz  -t1n  -t1c  -t2w  -seg

Each has its own label numbering, written into every row as ``tumour_label_scheme`` for
:class:`custom.transforms.brats_labels.ConvertToBratsRegionsd`:

- 2021 (``brats``): 0 background / 1 necrotic tumour core / 2 peritumoral edema / 4 enhancing tumour;
- 2023 (``brats2023``): 0 background / 1 necrotic tumour core (NCR) / 2 surrounding non-enhancing FLAIR
  hyperintensity (SNFH, the edema) / 3 enhancing tumour (ET). The sub-challenges other than adult glioma (GLI) use
  the same file names; check that their numbering is this one before training on them.

Rows list the four modalities in :data:`custom.data.synthetic_mr.MR_MODALITIES` order (FLAIR, T1, T1ce, T2, the
Decathlon Task01 order), which is 2023's t2f, t1n, t1c, t2w, so a network trained on any source sees the same
channels. Commands::

    python -m custom.data.seg_datasets.brats prepare --dataset_dir /data/BraTS2021_Training_Data
    python -m custom.data.seg_datasets.brats prepare --dataset_dir /data/BraTS2023-GLI-TrainingData
    python -m custom.data.seg_datasets.brats miniature --dataset_dir /tmp/brats_mini [--layout 2023]
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import numpy as np

from custom.data.seg_datasets.common import ensure_dataset, split_validation, write_datalist, write_nifti
from custom.data.synthetic_mr import BRATS_LABELS, MR_MODALITIES, render_brain_phantom
from custom.errors import DataError
from custom.transforms.brats_labels import LABEL_SCHEMES

__all__ = [
    "LAYOUTS",
    "BRATS2023_LABEL_SCHEME",
    "detect_layout",
    "case_row",
    "build_datalist",
    "prepare",
    "inference_images",
    "write_miniature",
    "ensure_miniature",
]

DATALIST_NAME = "datalist.json"

#: tissue -> label value of the BraTS 2023+ data (1 NCR, 2 SNFH, 3 ET)
BRATS2023_LABEL_SCHEME: dict[str, int] = LABEL_SCHEMES["brats2023"]


@dataclass(frozen=True)
class Layout:
    """File naming of one BraTS release: ``<case><separator><modality>.nii.gz``."""

    name: str
    separator: str
    modalities: tuple[str, ...]  # file suffixes in MR_MODALITIES order (FLAIR, T1, T1ce, T2)
    label_suffix: str
    label_scheme: str  # a custom.transforms.brats_labels.LABEL_SCHEMES name
    labels: dict[int, str]

    def file_name(self, case: str, suffix: str) -> str:
        return f"{case}{self.separator}{suffix}.nii.gz"

    def describe(self, case: str) -> str:
        first, *rest = self.modalities
        return f"{self.file_name(case, first)}, " + ", ".join(self.separator + s for s in [*rest, self.label_suffix])


LAYOUTS: dict[str, Layout] = {
    "2021": Layout("BraTS 2021", "_", ("flair", "t1", "t1ce", "t2"), "seg", "brats", dict(BRATS_LABELS)),
    "2023": Layout(
        "BraTS 2023",
        "-",
        ("t2f", "t1n", "t1c", "t2w"),
        "seg",
        "brats2023",
        {
            1: "necrotic tumour core (NCR)",
            2: "surrounding non-enhancing FLAIR hyperintensity (SNFH, edema)",
            3: "enhancing tumour (ET)",
        },
    ),
}
_2021_TO_2023 = {1: 1, 2: 2, 4: 3}  # the miniature's phantom is labelled in BraTS 2021 numbering


def _find(case_dir: str, case: str, layout: Layout, suffix: str) -> str | None:
    pattern = f"{glob.escape(case)}{layout.separator}{suffix}.nii*"
    matches = sorted(glob.glob(os.path.join(glob.escape(case_dir), pattern)))
    return matches[0] if matches else None


def detect_layout(case_dir: str) -> Layout:
    """The layout whose file names the case folder holds (any one modality or the segmentation suffices, so a case
    with a missing file is reported by :func:`case_row` with that file's name); a one-line :class:`DataError` naming
    the folder when neither layout matches."""
    case = os.path.basename(os.path.normpath(case_dir))
    for layout in LAYOUTS.values():
        if any(_find(case_dir, case, layout, s) for s in (*layout.modalities, layout.label_suffix)):
            return layout
    found = sorted(os.listdir(case_dir)) if os.path.isdir(case_dir) else []
    shown = ", ".join(found[:4]) + (f", ... ({len(found)} files)" if len(found) > 4 else "")
    raise DataError(
        f"{case_dir}: expected BraTS 2021 files ({LAYOUTS['2021'].describe(case)}) or BraTS 2023 files "
        f"({LAYOUTS['2023'].describe(case)}), found {shown or 'no files'}"
    )


def case_row(case_dir: str, dataset_dir: str, require_label: bool = True) -> dict:
    """One datalist row for a case folder of either layout; a missing modality or segmentation is a
    :class:`DataError`."""
    case = os.path.basename(os.path.normpath(case_dir))
    layout = detect_layout(case_dir)
    images = []
    for suffix in layout.modalities:
        path = _find(case_dir, case, layout, suffix)
        if path is None:
            raise DataError(f"{case_dir}: expected modality '{suffix}' ({layout.file_name(case, suffix)}), found none")
        images.append(os.path.relpath(path, dataset_dir))
    row = {"image": images, "patient_id": case, "tumour_label_scheme": layout.label_scheme}
    label = _find(case_dir, case, layout, layout.label_suffix)
    if label is not None:
        row["label"] = os.path.relpath(label, dataset_dir)
    elif require_label:
        raise DataError(
            f"{case_dir}: expected the segmentation {layout.file_name(case, layout.label_suffix)}, found none"
        )
    return row


def _case_dirs(dataset_dir: str) -> list[str]:
    if not os.path.isdir(dataset_dir):
        raise DataError(f"{dataset_dir}: expected a folder of BraTS case folders, found no such folder")
    case_dirs = sorted(
        d
        for d in glob.glob(os.path.join(glob.escape(dataset_dir), "*"))
        if os.path.isdir(d) and not os.path.basename(d).startswith(".")
    )
    if not case_dirs:
        raise DataError(
            f"{dataset_dir}: expected BraTS case folders (BraTS2021_XXXXX/ or BraTS-GLI-XXXXX-XXX/), found none"
        )
    return case_dirs


def _one_layout(dataset_dir: str, case_dirs: list[str]) -> Layout:
    """The one layout of all case folders (a folder mixing releases would mix patients and numberings)."""
    layouts = {}
    for case_dir in case_dirs:
        layouts.setdefault(detect_layout(case_dir).name, case_dir)
    if len(layouts) > 1:
        found = ", ".join(f"{name} ({os.path.basename(d)})" for name, d in sorted(layouts.items()))
        raise DataError(f"{dataset_dir}: expected case folders of one BraTS layout, found {found}")
    return next(layout for layout in LAYOUTS.values() if layout.name in layouts)


def build_datalist(dataset_dir: str, val_fraction: float = 0.2, seed: int = 0) -> dict:
    """``{"training", "validation"}`` rows from the case folders, with a seeded patient-level validation split."""
    case_dirs = _case_dirs(dataset_dir)
    layout = _one_layout(dataset_dir, case_dirs)
    rows = [case_row(d, dataset_dir) for d in case_dirs]
    validation = split_validation([r["patient_id"] for r in rows], val_fraction, seed)
    return {
        "description": f"{layout.name} training data (seeded validation split, seed {seed})",
        "labels": {"0": "background", **{str(k): v for k, v in layout.labels.items()}},
        "tumour_label_scheme": layout.label_scheme,
        "modality": {
            i: m if m == suffix else f"{m} ({suffix})"
            for i, (m, suffix) in enumerate(zip(MR_MODALITIES, layout.modalities))
        },
        "training": [r for r in rows if r["patient_id"] not in validation],
        "validation": [r for r in rows if r["patient_id"] in validation],
    }


def prepare(dataset_dir: str, val_fraction: float = 0.2, seed: int = 0) -> str:
    """Write ``datalist.json`` and its 1 / 10 / 100 % label-fraction datalists into ``dataset_dir``."""
    datalist = build_datalist(dataset_dir, val_fraction, seed)
    return write_datalist(datalist, os.path.join(dataset_dir, DATALIST_NAME), seed=seed)


def inference_images(dataset_dir: str) -> list[list[str]]:
    """The four modality files of every case folder of ``dataset_dir`` (either layout, no segmentation needed), in
    channel order: the ``images`` of ``inference.json``."""
    case_dirs = _case_dirs(dataset_dir)
    _one_layout(dataset_dir, case_dirs)
    return [
        [os.path.join(dataset_dir, p) for p in case_row(d, dataset_dir, require_label=False)["image"]]
        for d in case_dirs
    ]


def write_miniature(
    dataset_dir: str,
    num_cases: int = 10,
    shape: tuple[int, int, int] = (32, 32, 32),
    spacing: tuple[float, float, float] = (6.0, 6.0, 6.0),
    seed: int = 0,
    layout: str = "2021",
) -> str:
    """Write ``num_cases`` synthetic 4-modality brain MRs in the BraTS ``layout`` ("2021": ``BraTS2021_XXXXX``,
    labels 1/2/4; "2023": ``BraTS-GLI-XXXXX-000``, labels 1/2/3), plus datalists. The same seeds give the same
    phantoms in both layouts."""
    if str(layout) not in LAYOUTS:
        raise DataError(f"layout: expected one of {sorted(LAYOUTS)}, found {layout!r}")
    spec = LAYOUTS[str(layout)]
    for index in range(num_cases):
        case = f"BraTS2021_{index:05d}" if spec is LAYOUTS["2021"] else f"BraTS-GLI-{index:05d}-000"
        phantom = render_brain_phantom(shape, spacing, seed=seed * 1000 + index)
        for channel, suffix in enumerate(spec.modalities):
            path = os.path.join(dataset_dir, case, spec.file_name(case, suffix))
            write_nifti(phantom.image[channel], phantom.affine, path)
        label = phantom.label
        if spec is LAYOUTS["2023"]:
            label = np.zeros_like(phantom.label)
            for old, new in _2021_TO_2023.items():
                label[phantom.label == old] = new
        write_nifti(label, phantom.affine, os.path.join(dataset_dir, case, spec.file_name(case, spec.label_suffix)))
    return prepare(dataset_dir, seed=seed)


def ensure_miniature(dataset_dir: str, num_cases: int = 10, seed: int = 0, layout: str = "2021") -> str:
    """The miniature's ``datalist.json``, writing the miniature first if it is missing (safe under DDP)."""
    return ensure_dataset(
        dataset_dir, DATALIST_NAME, lambda folder: write_miniature(folder, num_cases, seed=seed, layout=layout)
    )


if __name__ == "__main__":
    import fire

    fire.Fire({"prepare": prepare, "miniature": write_miniature})
