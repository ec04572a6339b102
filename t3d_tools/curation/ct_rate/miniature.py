"""A miniature CT-RATE dataset folder with the hub's names, CSV columns and header quirks, for tests and scale runs.

    python -m t3d_tools.curation.ct_rate miniature --root /tmp/ct_rate_mini/dataset

Volumes are the real CT of ``tests/data/real_ct/example_ct.nii.gz`` (TotalSegmentator test data, CC BY 4.0),
downsampled by ``downsample`` and varied per volume (a seeded shift, flip and noise), so the body sits in air as in
CT-RATE. Reports are English template sentences written from each volume's labels (findings, then an impression),
with CT-RATE's "Not given." placeholder in some sections.

Header quirks, as in the releases (``docs/ct_rate_curation.md``): the ``train`` volumes carry the first release's
blank header (1 mm voxels, identity affine, no rescale; stored values are HU + 1024 so that ``RescaleIntercept``
-1024 is needed), the ``valid`` volumes the repaired header of the ``*_fixed`` re-upload (spacing and origin set,
values in HU). The metadata CSV always has the spacing and rescale, in its list-string form (``"[6.0, 6.0]"``).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence

import nibabel as nib
import numpy as np

from t3d_tools.curation.ct_rate.layout import CT_RATE_LABELS, CtRateFiles, VolumeName

__all__ = ["REAL_CT", "make_miniature", "report_for"]

REAL_CT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
    "tests",
    "data",
    "real_ct",
    "example_ct.nii.gz",
)
REPORT_HEADER = ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"]
METADATA_HEADER = [
    "VolumeName",
    "Manufacturer",
    "SeriesDescription",
    "PatientSex",
    "PatientAge",
    "Rows",
    "Columns",
    "NumberofSlices",
    "XYSpacing",
    "ZSpacing",
    "RescaleIntercept",
    "RescaleSlope",
    "RescaleType",
    "ImagePositionPatient",
    "ImageOrientationPatient",
]
_FINDING = {
    "Medical material": "A central venous catheter is seen.",
    "Arterial wall calcification": "Atherosclerotic calcifications are present in the aortic wall.",
    "Cardiomegaly": "The heart is enlarged.",
    "Pericardial effusion": "Pericardial effusion is noted.",
    "Coronary artery wall calcification": "Calcific plaques are seen in the coronary arteries.",
    "Hiatal hernia": "A hiatal hernia is observed.",
    "Lymphadenopathy": "Mediastinal lymph nodes are enlarged.",
    "Emphysema": "Centrilobular emphysema is present in both upper lobes.",
    "Atelectasis": "Subsegmental atelectasis is seen at the lung bases.",
    "Lung nodule": "A 6 mm nodule is present in the right lower lobe.",
    "Lung opacity": "Ground-glass opacities are seen in both lungs.",
    "Pulmonary fibrotic sequela": "Fibrotic sequelae are seen in the left lung.",
    "Pleural effusion": "There is a right pleural effusion.",
    "Mosaic attenuation pattern": "A mosaic attenuation pattern is observed.",
    "Peribronchial thickening": "Peribronchial thickening is present.",
    "Consolidation": "Consolidation is seen in the left lower lobe.",
    "Bronchiectasis": "Cylindrical bronchiectasis is seen.",
    "Interlobular septal thickening": "Interlobular septal thickening is observed.",
}
_NEGATIVE = {
    "Pleural effusion": "No pleural effusion.",
    "Cardiomegaly": "Heart size is normal.",
    "Lung nodule": "No pulmonary nodule was detected.",
    "Consolidation": "No consolidation.",
    "Lymphadenopathy": "No lymphadenopathy in the mediastinum.",
}


def report_for(labels: Sequence[str], rng: np.random.Generator) -> tuple[str, str]:
    """``(findings, impressions)``: a sentence per positive label, a few negations, trachea and bones boilerplate."""
    sentences = ["Trachea and both main bronchi are open."]
    sentences += [_FINDING[name] for name in labels]
    sentences += [text for name, text in _NEGATIVE.items() if name not in labels and rng.random() < 0.5]
    sentences.append("Degenerative changes are seen in the thoracic vertebrae.")
    impression = (" ".join(f"{name}." for name in labels[:3])) if labels else "No acute pathology."
    return " ".join(sentences), impression


def _base_volume(downsample: int) -> tuple[np.ndarray, float]:
    image = nib.load(REAL_CT)
    array = np.asanyarray(image.dataobj).astype(np.float32)
    step = max(1, int(downsample))
    return array[::step, ::step, ::step], float(image.header.get_zooms()[0]) * step


def _write_csv(path: str, header: list[str], rows: list[list]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _scans_of(pid: int, many_scans: bool) -> dict[str, int]:
    """Scans (letters) and their reconstruction counts: some patients have two scans, some scans two reconstructions."""
    if not many_scans:
        return {"a": 1}
    return {0: {"a": 1}, 1: {"a": 2}, 2: {"a": 1, "b": 1}}[pid % 3]


def make_miniature(
    root: str,
    train_patients: int = 8,
    valid_patients: int = 4,
    downsample: int = 2,
    many_scans: bool = True,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Write the miniature under ``root`` (the ``dataset`` folder); returns ``{"volumes": N, "root": root}``."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    base, spacing = _base_volume(downsample)
    files = CtRateFiles()
    volumes = 0
    for split, count in (("train", train_patients), ("valid", valid_patients)):
        reports, labels, metadata = [], [], []
        for pid in tqdm(range(1, count + 1), desc=f"miniature {split}", disable=not progress):
            for scan, recs in _scans_of(pid, many_scans).items():
                positives = [n for n in CT_RATE_LABELS if rng.random() < 0.25]
                findings, impression = report_for(positives, rng)
                clinical = "Not given." if rng.random() < 0.5 else "Cough and fever."
                shift = rng.integers(-3, 4, size=3)
                volume = np.roll(base, tuple(shift), axis=(0, 1, 2))
                if rng.random() < 0.5:
                    volume = volume[::-1]
                for rec in range(1, recs + 1):
                    name = VolumeName(f"{split}_{pid}_{scan}_{rec}.nii.gz", split, str(pid), scan, rec)
                    noisy = volume + rng.normal(0.0, 5.0 * rec, size=volume.shape).astype(np.float32)
                    z_spacing = spacing * rec  # a thicker-slice reconstruction of the same scan
                    noisy = noisy[:, :, ::rec]
                    hu = np.clip(np.rint(noisy), -1024, 3071)
                    origin = [-0.5 * spacing * hu.shape[0], -0.5 * spacing * hu.shape[1], -z_spacing * hu.shape[2]]
                    if split == "train":  # the first release: raw stored values, blank header
                        image = nib.Nifti1Image((hu + 1024).astype(np.int16), np.eye(4))
                    else:  # the *_fixed re-upload: HU, spacing and origin in the header
                        affine = np.diag([-spacing, -spacing, z_spacing, 1.0])
                        affine[:3, 3] = [-origin[0], -origin[1], origin[2]]
                        image = nib.Nifti1Image(hu.astype(np.int16), affine)
                    path = os.path.join(root, name.relative_path(split))
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    nib.save(image, path)
                    volumes += 1
                    reports.append([name.name, clinical, "Non-contrast chest CT.", findings, impression])
                    labels.append([name.name, *[int(n in positives) for n in CT_RATE_LABELS]])
                    metadata.append(
                        [
                            name.name,
                            "SIEMENS",
                            "Thorax 1.5",
                            "M" if pid % 2 else "F",
                            f"{40 + pid % 40:03d}Y",
                            hu.shape[1],
                            hu.shape[0],
                            hu.shape[2],
                            f"[{spacing}, {spacing}]",
                            z_spacing,
                            -1024,
                            1,
                            "HU",
                            str([round(v, 2) for v in origin]),
                            "[1, 0, 0, 0, 1, 0]",
                        ]
                    )
        _write_csv(os.path.join(root, files.reports[split]), REPORT_HEADER, reports)
        _write_csv(os.path.join(root, files.labels[split]), ["VolumeName", *CT_RATE_LABELS], labels)
        _write_csv(os.path.join(root, files.metadata[split]), METADATA_HEADER, metadata)
    return {"root": os.path.abspath(root), "volumes": volumes}
