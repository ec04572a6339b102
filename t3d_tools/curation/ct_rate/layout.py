"""CT-RATE as downloaded from the Hugging Face hub (``ibrahimhamamci/CT-RATE``): folder and file names, CSV columns,
the 18 abnormality labels, and how a volume name splits into split / patient / scan / reconstruction.

Layout under the dataset folder (``--root``, the hub's ``dataset/`` folder; sources in ``docs/ct_rate_curation.md``)::

    train/train_<pid>/train_<pid>_<scan>/train_<pid>_<scan>_<rec>.nii.gz      (or train_fixed/..., see below)
    valid/valid_<pid>/valid_<pid>_<scan>/valid_<pid>_<scan>_<rec>.nii.gz
    radiology_text_reports/train_reports.csv, validation_reports.csv
    multi_abnormality_labels/train_predicted_labels.csv, valid_predicted_labels.csv
    metadata/train_metadata.csv, validation_metadata.csv

``<pid>`` numbers patients within a split (``train_53`` and ``valid_53`` are different people), ``<scan>`` is a
letter (``a``, ``b``, ...) and ``<rec>`` a reconstruction number. Every CSV is keyed by ``VolumeName``, the file
name with its ``.nii.gz``. A release that re-uploaded volumes with repaired headers puts them in
``train_fixed`` / ``valid_fixed``; those folders win when present (``volume_folder`` overrides).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields

from custom.errors import DataError

__all__ = ["SPLITS", "CT_RATE_LABELS", "VolumeName", "parse_volume_name", "CtRateColumns", "CtRateFiles"]

#: the official splits: folder prefix -> the datalist split it becomes
SPLITS: dict[str, str] = {"train": "training", "valid": "validation"}

#: the 18 abnormality columns of ``*_predicted_labels.csv``, in CT-CLIP's order (``scripts/zero_shot.py``)
CT_RATE_LABELS: tuple[str, ...] = (
    "Medical material",
    "Arterial wall calcification",
    "Cardiomegaly",
    "Pericardial effusion",
    "Coronary artery wall calcification",
    "Hiatal hernia",
    "Lymphadenopathy",
    "Emphysema",
    "Atelectasis",
    "Lung nodule",
    "Lung opacity",
    "Pulmonary fibrotic sequela",
    "Pleural effusion",
    "Mosaic attenuation pattern",
    "Peribronchial thickening",
    "Consolidation",
    "Bronchiectasis",
    "Interlobular septal thickening",
)

_VOLUME_NAME = re.compile(r"^(train|valid)_(\d+)_([a-z]+)_(\d+)\.nii\.gz$")


@dataclass(frozen=True)
class VolumeName:
    """``train_53_a_2.nii.gz`` -> split ``train``, patient ``train_53``, study ``train_53_a``, reconstruction 2."""

    name: str
    split: str
    pid: str
    scan: str
    reconstruction: int

    @property
    def patient_id(self) -> str:
        return f"{self.split}_{self.pid}"

    @property
    def study_id(self) -> str:
        return f"{self.split}_{self.pid}_{self.scan}"

    def relative_path(self, folder: str) -> str:
        """Where the hub puts it under ``folder`` (``train`` or ``train_fixed``)."""
        return os.path.join(folder, self.patient_id, self.study_id, self.name)


def parse_volume_name(name: str, where: str) -> VolumeName:
    """Split a ``VolumeName``; one-line :class:`DataError` naming ``where`` when it is not CT-RATE's form."""
    match = _VOLUME_NAME.match(name.strip())
    if match is None:
        raise DataError(
            f"{where}: expected a volume name like 'train_53_a_1.nii.gz' (split_patient_scan_reconstruction), "
            f"found {name!r}"
        )
    split, pid, scan, rec = match.groups()
    return VolumeName(name.strip(), split, pid, scan, int(rec))


@dataclass
class CtRateColumns:
    """CSV column names (override any with ``--columns '{"findings": "Findings_EN"}'``)."""

    volume: str = "VolumeName"
    findings: str = "Findings_EN"
    impressions: str = "Impressions_EN"
    xy_spacing: str = "XYSpacing"
    z_spacing: str = "ZSpacing"
    slope: str = "RescaleSlope"
    intercept: str = "RescaleIntercept"
    position: str = "ImagePositionPatient"  # optional: the origin of a repaired header
    orientation: str = "ImageOrientationPatient"  # optional: its direction cosines

    @classmethod
    def from_overrides(cls, overrides: dict | None) -> CtRateColumns:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides or {}) - names)
        if unknown:
            raise DataError(f"columns: expected keys from {sorted(names)}, found unknown {unknown}")
        return cls(**(overrides or {}))


@dataclass
class CtRateFiles:
    """The CSV files of each split, relative to the dataset folder."""

    reports: dict[str, str] = field(
        default_factory=lambda: {
            "train": os.path.join("radiology_text_reports", "train_reports.csv"),
            "valid": os.path.join("radiology_text_reports", "validation_reports.csv"),
        }
    )
    labels: dict[str, str] = field(
        default_factory=lambda: {
            "train": os.path.join("multi_abnormality_labels", "train_predicted_labels.csv"),
            "valid": os.path.join("multi_abnormality_labels", "valid_predicted_labels.csv"),
        }
    )
    metadata: dict[str, str] = field(
        default_factory=lambda: {
            "train": os.path.join("metadata", "train_metadata.csv"),
            "valid": os.path.join("metadata", "validation_metadata.csv"),
        }
    )

    def volume_folder(self, root: str, split: str, override: str | None = None) -> str:
        """``<split>_fixed`` when the release has it, else ``<split>`` (or ``override``), relative to ``root``."""
        if override:
            return override
        fixed = f"{split}_fixed"
        return fixed if os.path.isdir(os.path.join(root, fixed)) else split
