"""A miniature BIMCV-R with the release's names, CSV columns and quirks, for tests.

    python -m t3d_tools.curation.bimcv_r miniature --root /tmp/bimcv_r_mini

``root/BIMCV-R.csv`` has BIMCV-R's columns (``PatientID``, ``ReportID``, ``Report``, ``Labels``, ``Localizations``,
``LabelsLocalizationsBySentence``, ``labelCUIS``, ``LocalizationsCUIS``, ``num``, ``path``, ``Report_en``,
``ct_path``; ``path`` and ``ct_path`` point into the original BIMCV tree, which the user does not have: only the file
name of ``ct_path`` is used) and ``root/ct/`` its volumes
(``sub-S<n>_ses-E<n>_run-1_bp-chest_ct.nii.gz``), made from the real CT of ``tests/data/real_ct`` downsampled by 2.
Reports are machine-translation-like English sentences written from each study's findings (negated findings too);
``Labels`` lists the findings as PadChest terms with the meta labels and one finding the labeler does not cover
("aortic elongation"), so coverage is measured below 100 %.

Planted quirks, one study each: a file whose ``sub-``/``ses-`` differ from its row's ids (``id_mismatch``), a header
whose slice spacing is the whole field of view (``fov_spacing``), a volume no row names (``unlisted``).
"""

from __future__ import annotations

import csv
import os

import nibabel as nib
import numpy as np

from t3d_tools.curation.ct_rate.miniature import REAL_CT

__all__ = ["FINDINGS", "make_miniature"]

HEADER = [
    "PatientID",
    "ReportID",
    "Report",
    "Labels",
    "Localizations",
    "LabelsLocalizationsBySentence",
    "labelCUIS",
    "LocalizationsCUIS",
    "num",
    "path",
    "Report_en",
    "ct_path",
]
#: PadChest term -> (positive English sentence, negated sentence)
FINDINGS: dict[str, tuple[str, str]] = {
    "ground glass pattern": ("Ground glass opacities in both lower lobes.", "No ground glass opacities."),
    "nodule": ("A 4 mm nodule in the right upper lobe.", "No pulmonary nodules are identified."),
    "pleural effusion": ("Small left pleural effusion.", "No pleural effusion."),
    "consolidation": ("Consolidation in the left lower lobe.", "No consolidation areas."),
    "adenopathy": ("Mediastinal adenopathies of pathological size.", "No mediastinal or axillary adenopathies."),
    "calcified densities": ("Calcifications in the coronary arteries.", "No calcifications."),
    "pneumonia": ("Findings compatible with pneumonia.", "No signs of pneumonia."),
    "emphysema": ("Centrilobular emphysema.", "No emphysema."),
}
UNCOVERED = "aortic elongation"


def _volume(base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.roll(base, tuple(rng.integers(-3, 4, size=3)), axis=(0, 1, 2)) + rng.normal(0, 5, size=base.shape)


def make_miniature(root: str, patients: int = 10, seed: int = 0) -> dict:
    """Write the miniature under ``root``; returns ``{"root", "rows", "volumes"}``."""
    rng = np.random.default_rng(seed)
    image = nib.load(REAL_CT)
    base = np.asanyarray(image.dataobj).astype(np.float32)[::2, ::2, ::2]
    spacing = float(image.header.get_zooms()[0]) * 2
    folder = os.path.join(root, "ct")
    os.makedirs(folder, exist_ok=True)
    rows, volumes = [], 0

    def save(name: str, array: np.ndarray, z_spacing: float) -> None:
        nonlocal volumes
        affine = np.diag([-spacing, -spacing, z_spacing, 1.0])
        nib.save(nib.Nifti1Image(np.rint(array).astype(np.int16), affine), os.path.join(folder, name))
        volumes += 1

    for index in range(patients):
        subject, session = f"sub-S{1000 + index}", f"ses-E{2000 + index}"
        positives = [t for t in FINDINGS if rng.random() < 0.35]
        sentences = ["Chest CT with intravenous contrast."]
        sentences += [FINDINGS[t][0] if t in positives else FINDINGS[t][1] for t in FINDINGS if rng.random() < 0.8]
        if index % 3 == 0:
            sentences.append("Elongation of the thoracic aorta.")
        labels = positives + ([UNCOVERED] if index % 3 == 0 else []) + ["exclude", "normal"]
        name = f"{subject}_{session}_run-1_bp-chest_ct.nii.gz"
        z_spacing = spacing
        if index == 1:  # id_mismatch: the row names a file of another session
            name = f"{subject}_ses-E9999_run-1_bp-chest_ct.nii.gz"
        if index == 2:  # fov_spacing: the header's slice spacing is the whole field of view
            z_spacing = spacing * base.shape[2]
        save(name, _volume(base, rng), z_spacing)
        rows.append(
            [
                subject,
                session,
                "tac toracico . " + " . ".join(t for t in positives),
                str([f" {t}" if i else t for i, t in enumerate(labels)]),
                "['loc lower lobe']",
                str(labels),
                "[C0000000]",
                "[C0225758]",
                float(len(labels)),
                f"/BIMCV-COVID19-cIter_1_2_3/covid19_posi/{subject}/{session}/mod-rx",
                ".".join(sentences),
                f"/BIMCV-COVID19-cIter_1_2_3/covid19_posi/{subject}/{session}/mod-rx/{name}",
            ]
        )
    save("sub-S9000_ses-E9000_run-1_bp-chest_ct.nii.gz", _volume(base, rng), spacing)  # unlisted
    with open(os.path.join(root, "BIMCV-R.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return {"root": os.path.abspath(root), "rows": len(rows), "volumes": volumes}
