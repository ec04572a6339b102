"""Write a synthetic image-report pairs set in the on-disk form real data uses: NIfTI volumes + a MONAI datalist.

    python -m custom.data.make_synthetic_pairs --out_dir data/synthetic_pairs --num_train 48 --num_val 16
    python -m custom.data.make_synthetic_pairs --out_dir data/synthetic_pairs_short --report_style short

Layout::

    out_dir/images/SYN0001_S01.nii.gz   int16 HU, affine diag(spacing) (RAS+)
    out_dir/labels/SYN0001_S01.nii.gz   organ ids (BTCV 1..13, extras >= 20), with --with_labels
    out_dir/pairs_datalist.json         {"training": [...], "validation": [...], "finding_names": [...]}

Each datalist row: ``image`` (relative to out_dir), ``report``, ``patient_id``, ``study_id``, ``labels`` (finding
names) and ``label_vector`` (multi-hot over ``finding_names``). Splits are by patient; about one patient in five has
two studies so patient-level splitting is exercised. Deterministic for a given ``seed``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import nibabel as nib
import numpy as np

from custom.data.synthetic_ct import FINDING_NAMES, render_phantom, sample_findings
from custom.data.synthetic_reports import REPORT_STYLES, write_report
from custom.distributed import main_process_first

__all__ = ["make_synthetic_pairs", "ensure_synthetic_pairs"]

DATALIST_NAME = "pairs_datalist.json"


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), path)


def make_synthetic_pairs(
    out_dir: str,
    num_train: int = 48,
    num_val: int = 16,
    shape: Sequence[int] = (96, 96, 80),
    spacing: Sequence[float] = (3.0, 3.0, 3.0),
    seed: int = 0,
    abnormal_rate: float = 0.75,
    with_labels: bool = False,
    report_style: str = "long",
) -> str:
    """Generate ``num_train + num_val`` studies into ``out_dir``; returns the datalist path.

    ``report_style``: "long" (realistic TECHNIQUE/FINDINGS/IMPRESSION reports, 100-300 words, mostly normal
    statements) or "short" (the original one-to-five-sentence reports); see :mod:`custom.data.synthetic_reports`.
    """
    if report_style not in REPORT_STYLES:
        raise ValueError(f"report_style: expected one of {REPORT_STYLES}, found {report_style!r}")
    rng = np.random.default_rng(seed)
    # The short report is always drawn from the main stream; a long one is then drawn from a stream of its own. So
    # volumes, findings and the split are the same for both styles (and the same as before the long style existed).
    report_rng = np.random.default_rng([seed, 1])
    rows: list[dict] = []
    patient = 0
    while len(rows) < num_train + num_val:
        patient += 1
        studies = 2 if rng.random() < 0.2 else 1
        for session in range(1, studies + 1):
            findings = sample_findings(rng, abnormal_rate=abnormal_rate)
            phantom = render_phantom(
                findings, shape=tuple(shape), spacing=tuple(spacing), seed=int(rng.integers(2**31))
            )
            study_id = f"SYN{patient:04d}_S{session:02d}"
            image_rel = f"images/{study_id}.nii.gz"
            _save_nifti(phantom.image, phantom.affine, os.path.join(out_dir, image_rel))
            report = write_report(findings, rng, style="short")
            if report_style == "long":
                report = write_report(findings, report_rng, style="long")
            row = {
                "image": image_rel,
                "report": report,
                "patient_id": f"SYN{patient:04d}",
                "study_id": study_id,
                "labels": [f.name for f in findings],
                "label_vector": phantom.label_vector().astype(int).tolist(),
            }
            if with_labels:
                row["label"] = f"labels/{study_id}.nii.gz"
                _save_nifti(phantom.organs, phantom.affine, os.path.join(out_dir, row["label"]))
            rows.append(row)
    # split by patient: walk patients in order until the training quota is filled
    training, validation = [], []
    for row in rows:
        same_patient_in_train = training and training[-1]["patient_id"] == row["patient_id"]
        (training if len(training) < num_train or same_patient_in_train else validation).append(row)
    datalist = {"finding_names": list(FINDING_NAMES), "training": training, "validation": validation}
    path = os.path.join(out_dir, DATALIST_NAME)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(datalist, f, indent=1)
    return path


@main_process_first
def ensure_synthetic_pairs(out_dir: str, **kwargs) -> str:
    """Generate the set unless ``out_dir`` already has a datalist (bundles call this in ``initialize``)."""
    path = os.path.join(out_dir, DATALIST_NAME)
    if os.path.isfile(path):
        return path
    return make_synthetic_pairs(out_dir, **kwargs)


if __name__ == "__main__":
    import fire

    fire.Fire(make_synthetic_pairs)
