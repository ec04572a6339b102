"""A miniature BIMCV-COVID19 tree in the real MIDS layout, with known labels and planted defects, for tests.

    python -m t3d_tools.curation.bimcv miniature --root /tmp/bimcv_mini

Volumes come from the synthetic phantom engine (:mod:`custom.data.synthetic_ct`), so every study's findings are
known; the Spanish report (:func:`write_spanish_report`) and the PadChest-style ``Labels`` list are written from the
same findings, with header/date/anonymisation noise, synonyms, case variants and meta labels as in the real tables.
An English ``Report_en`` column (not in real releases; see the docs) lets tests exercise the
"already-translated column" route. ``miniature_truth.json`` at the root (not a BIMCV file) records the ground truth:
each study's findings and the exclusion reason expected for each planted defect.

Planted defects (one study each, on top of the clean studies):
``non_ct`` (only an X-ray PNG), ``unreadable`` (truncated NIfTI), ``no_report`` (no row in the labels TSV),
``duplicate`` (a voxel-identical copy of another study of the same patient), ``whitespace_report``,
``non_utf8`` (its labels row is Latin-1 encoded), ``too_few_slices``, ``not_chest`` (``bp-head``), ``dicom``
(a DICOM series folder) and ``missing_file`` (listed in ``partitions.tsv``, absent on disk). One patient has studies
in three sessions, and one study has two CT series so the one-volume-per-study rule is exercised.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Collection, Sequence

import nibabel as nib
import numpy as np
from PIL import Image

from custom.data.synthetic_ct import Finding, render_phantom, sample_findings
from custom.data.synthetic_reports import write_report
from t3d_tools.curation.bimcv.mids import dicom_reader_available

__all__ = ["LABEL_SURFACE_FORMS", "write_spanish_report", "padchest_labels", "make_miniature"]

TRUTH_NAME = "miniature_truth.json"
LABELS_TSV = os.path.join("derivatives", "labels", "labels_covid_posi.tsv")

# finding name -> PadChest-style surface forms used in the Labels column (all map back through labels.SYNONYMS)
LABEL_SURFACE_FORMS: dict[str, tuple[str, ...]] = {
    "nodule": ("nodule", "pulmonary nodule", "Nodule"),
    "mass": ("mass", "pulmonary mass"),
    "pleural effusion": ("pleural effusion", "Pleural Effusion", "effusion"),
    "consolidation": ("consolidation", "alveolar consolidation"),
    "emphysema": ("emphysema", "pulmonary emphysema"),
    "cardiomegaly": ("cardiomegaly", "Cardiomegaly"),
    "hepatic lesion": ("hepatic lesion", "liver lesion"),
    "renal cyst": ("renal cyst", "kidney cyst"),
}

_SIDE = {"right": "derecho", "left": "izquierdo", "bilateral": "bilateral", "": ""}
_ZONE = {"upper": "superior", "lower": "inferior", "": ""}
_POSITIVE_ES: dict[str, tuple[str, ...]] = {
    "nodule": (
        "Nódulo pulmonar de {size} mm en el lóbulo {zone} {side}.",
        "Se observa un nódulo sólido de {size} mm en el lóbulo {zone} {side}.",
    ),
    "mass": ("Masa pulmonar de {size} mm en el lóbulo {zone} {side}, sospechosa de malignidad.",),
    "pleural effusion": ("Derrame pleural {side}.", "Pequeño derrame pleural {side} con atelectasia adyacente."),
    "consolidation": ("Consolidación parcheada en el lóbulo {zone} {side}.",),
    "emphysema": ("Enfisema centrolobulillar en ambos lóbulos superiores.",),
    "cardiomegaly": ("Cardiomegalia.", "Aumento del tamaño de la silueta cardiaca."),
    "hepatic lesion": ("Lesión hipodensa hepática de {size} mm.",),
    "renal cyst": ("Quiste simple de {size} mm en el riñón {side}.",),
}
_NEGATIVE_ES: dict[str, str] = {
    "nodule": "No se observan nódulos pulmonares.",
    "pleural effusion": "Sin derrame pleural.",
    "consolidation": "No hay consolidaciones.",
    "cardiomegaly": "Silueta cardiaca de tamaño normal.",
}
_NORMAL_ES = ("Sin hallazgos patológicos agudos.", "Estudio dentro de la normalidad.")


def write_spanish_report(findings: Sequence[Finding], rng: np.random.Generator) -> str:
    """Spanish report for ``findings`` with the noise cleaning must remove: a header, a date, an anonymised name
    and sometimes a repeated sentence."""
    if findings:
        sentences = [
            str(rng.choice(_POSITIVE_ES[f.name])).format(size=int(f.size_mm), side=_SIDE[f.side], zone=_ZONE[f.zone])
            for f in findings
        ]
        present = {f.name for f in findings}
        sentences += [text for name, text in _NEGATIVE_ES.items() if name not in present][: int(rng.integers(0, 2))]
    else:
        sentences = [str(rng.choice(_NORMAL_ES))]
    if rng.random() < 0.5:
        sentences.append(sentences[0])  # copy-paste repetition, common in dictated reports
    date = f"{int(rng.integers(1, 29)):02d}/{int(rng.integers(1, 13)):02d}/2020"
    return f"INFORME TC TÓRAX: Fecha: {date}. Paciente [NOMBRE] remitido para estudio. " + " ".join(sentences)


def padchest_labels(findings: Sequence[Finding], rng: np.random.Generator) -> str:
    """The ``Labels`` cell: a list string of surface forms, with meta labels ("normal", "exclude", "unchanged")."""
    if not findings:
        terms = ["normal"] if rng.random() < 0.7 else ["normal", "exclude"]
    else:
        terms = [str(rng.choice(LABEL_SURFACE_FORMS[f.name])) for f in findings]
        if rng.random() < 0.3:
            terms.append("unchanged")
    return repr(terms)


def _write_tsv(
    path: str, header: Sequence[str], rows: Sequence[Sequence[str]], latin1_rows: Collection[int] = ()
) -> None:
    """Write a TSV; rows whose index is in ``latin1_rows`` are encoded as Latin-1 (a non-UTF-8 row)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        for index, row in enumerate([header, *rows]):
            buffer = io.StringIO()
            csv.writer(buffer, delimiter="\t", lineterminator="\n").writerow(row)
            f.write(buffer.getvalue().encode("latin-1" if index - 1 in latin1_rows else "utf-8"))


def _write_sidecar(image_path: str, tags: dict) -> None:
    stem = image_path[: -len(".nii.gz")] if image_path.endswith(".nii.gz") else os.path.splitext(image_path)[0]
    with open(stem + ".json", "w", encoding="utf-8") as f:
        json.dump(tags, f, indent=1)


def _ct_tags(spacing: Sequence[float], body_part: str = "CHEST") -> dict:
    return {
        "Modality": "CT",
        "BodyPartExamined": body_part,
        "SliceThickness": float(spacing[2]),
        "PixelSpacing": [float(spacing[0]), float(spacing[1])],
        "Manufacturer": "SIEMENS",
        "KVP": 120,
    }


def make_miniature(
    root: str,
    num_patients: int = 12,
    shape: Sequence[int] = (48, 48, 40),
    spacing: Sequence[float] = (7.0, 7.0, 8.0),
    seed: int = 0,
    english_column: bool = True,
) -> dict:
    """Write the miniature tree into ``root`` (replacing it); returns the ground truth, also saved as
    ``root/miniature_truth.json``: ``studies`` (id -> subject, session, findings, status = "included" or the expected
    exclusion reason), ``defects`` (defect name -> study id), ``multi_session_patient``, ``two_series_study`` and
    ``selected_series``."""
    if num_patients < 11:
        raise ValueError(f"num_patients: expected >= 11 (the defects need distinct patients), found {num_patients}")
    if os.path.isdir(root):
        shutil.rmtree(root)
    os.makedirs(root)
    rng = np.random.default_rng(seed)
    shape, spacing = tuple(int(s) for s in shape), tuple(float(s) for s in spacing)
    subjects = [f"sub-S{p:05d}" for p in range(1, num_patients + 1)]
    truth: dict = {"studies": {}, "defects": {}, "multi_session_patient": subjects[1], "two_series_study": ""}
    report_rows: list[list[str]] = []
    latin1_rows: set[int] = set()
    sessions_of: dict[str, list[list[str]]] = {s: [] for s in subjects}
    partitions: list[list[str]] = []
    session_counter = iter(range(1, 10_000))

    def new_session(subject: str) -> tuple[str, str]:
        session = f"ses-E{next(session_counter):05d}"
        study_date = f"2020{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
        sessions_of[subject].append([session, study_date, "TC"])
        return session, os.path.join(root, subject, session)

    def add_ct(
        subject: str,
        session: str,
        ses_dir: str,
        findings: list,
        slices: int | None = None,
        run: int = 1,
        body_part: str = "chest",
        ct_spacing: Sequence[float] = spacing,
    ) -> str:
        volume_shape = (*shape[:2], slices or shape[2])
        phantom = render_phantom(findings, shape=volume_shape, spacing=tuple(ct_spacing), seed=int(rng.integers(2**31)))
        name = f"{subject}_{session}_run-{run}_bp-{body_part}_ct.nii.gz"
        path = os.path.join(ses_dir, "mod-ct", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        nib.save(nib.Nifti1Image(phantom.image, phantom.affine), path)
        _write_sidecar(path, _ct_tags(ct_spacing, body_part.upper()))
        partitions.append([subject, session, os.path.relpath(path, root)])
        return path

    def add_report(subject: str, session: str, findings: list, text: str | None = None) -> int:
        spanish = write_spanish_report(findings, rng) if text is None else text
        row = [session, subject, spanish, padchest_labels(findings, rng)]
        if english_column:
            # short style: the column stands for a translation of the (short) Spanish report, and the miniature's
            # random stream (which studies get which findings, hence which classes pass the threshold) is tuned on it
            row.append(write_report(findings, rng, style="short"))
        report_rows.append(row)
        return len(report_rows) - 1

    def record(subject: str, session: str, findings: list, status: str, defect: str | None = None) -> str:
        study_id = f"{subject}_{session}"
        truth["studies"][study_id] = {
            "subject": subject,
            "session": session,
            "findings": [f.name for f in findings],
            "status": status,
        }
        if defect:
            truth["defects"][defect] = study_id
        return study_id

    # clean studies: one per patient, three for the multi-session patient; every third also has an X-ray
    first_study: dict[str, tuple[str, str, list]] = {}
    for index, subject in enumerate(subjects):
        for _ in range(3 if subject == truth["multi_session_patient"] else 1):
            findings = sample_findings(rng)
            session, ses_dir = new_session(subject)
            path = add_ct(subject, session, ses_dir, findings)
            first_study.setdefault(subject, (session, path, findings))
            if index % 3 == 0:
                png = os.path.join(ses_dir, "mod-rx", f"{subject}_{session}_run-1_bp-chest_vp-pa_cr.png")
                os.makedirs(os.path.dirname(png), exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(png)
                _write_sidecar(png, {"Modality": "CR", "BodyPartExamined": "CHEST", "ViewPosition": "PA"})
                partitions.append([subject, session, os.path.relpath(png, root)])
            if index == 0:  # a second, thicker CT series with fewer slices: the policy must pick the first
                add_ct(
                    subject,
                    session,
                    ses_dir,
                    findings,
                    slices=shape[2] // 2,
                    run=2,
                    ct_spacing=(spacing[0], spacing[1], spacing[2] * 2),
                )
                truth["two_series_study"] = f"{subject}_{session}"
                truth["selected_series"] = os.path.relpath(path, root)
            add_report(subject, session, findings)
            record(subject, session, findings, "included")

    # planted defects, each in its own session of a distinct patient
    findings = sample_findings(rng)
    subject = subjects[2]
    session, ses_dir = new_session(subject)
    png = os.path.join(ses_dir, "mod-rx", f"{subject}_{session}_run-1_bp-chest_vp-ap_cr.png")
    os.makedirs(os.path.dirname(png), exist_ok=True)
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(png)
    _write_sidecar(png, {"Modality": "CR", "BodyPartExamined": "CHEST", "ViewPosition": "AP"})
    add_report(subject, session, findings)
    record(subject, session, findings, "not CT", "non_ct")

    subject = subjects[3]
    findings = sample_findings(rng)
    session, ses_dir = new_session(subject)
    path = add_ct(subject, session, ses_dir, findings)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])  # truncated download
    add_report(subject, session, findings)
    record(subject, session, findings, "unreadable image", "unreadable")

    subject = subjects[4]
    findings = sample_findings(rng)
    session, ses_dir = new_session(subject)
    add_ct(subject, session, ses_dir, findings)
    record(subject, session, findings, "no report", "no_report")

    subject = subjects[5]
    original_session, original_path, findings = first_study[subject]
    session, ses_dir = new_session(subject)
    copy = os.path.join(ses_dir, "mod-ct", os.path.basename(original_path).replace(original_session, session))
    os.makedirs(os.path.dirname(copy), exist_ok=True)
    shutil.copyfile(original_path, copy)
    _write_sidecar(copy, _ct_tags(spacing))
    add_report(subject, session, findings)
    record(subject, session, findings, "duplicate study", "duplicate")

    subject = subjects[6]
    findings = sample_findings(rng)
    session, ses_dir = new_session(subject)
    add_ct(subject, session, ses_dir, findings)
    add_report(subject, session, findings, text="   ")
    record(subject, session, findings, "empty report", "whitespace_report")

    subject = subjects[7]
    findings = [Finding("pleural effusion", "right")]
    session, ses_dir = new_session(subject)
    add_ct(subject, session, ses_dir, findings)
    text = "Derrame pleural derecho. Pulmón izquierdo sin alteración."
    latin1_rows.add(add_report(subject, session, findings, text=text))
    record(subject, session, findings, "report not UTF-8", "non_utf8")

    subject = subjects[8]
    findings = sample_findings(rng)
    session, ses_dir = new_session(subject)
    add_ct(subject, session, ses_dir, findings, slices=4)
    add_report(subject, session, findings)
    record(subject, session, findings, "too few slices", "too_few_slices")

    subject = subjects[9]
    findings: list = []
    session, ses_dir = new_session(subject)
    add_ct(subject, session, ses_dir, findings, body_part="head")
    add_report(subject, session, findings)
    record(subject, session, findings, "not chest", "not_chest")

    subject = subjects[0]
    findings = sample_findings(rng)
    session, ses_dir = new_session(subject)
    series_dir = os.path.join(ses_dir, "mod-ct", f"{subject}_{session}_run-1_bp-chest_ct")
    os.makedirs(series_dir)
    for slice_index in range(3):  # placeholder slices: a real reader rejects them, no reader never opens them
        with open(os.path.join(series_dir, f"IM{slice_index:04d}.dcm"), "wb") as f:
            f.write(b"\0" * 128 + b"DICM" + bytes(64))
    _write_sidecar(series_dir, _ct_tags(spacing))  # a series folder's sidecar is <folder>.json
    add_report(subject, session, findings)
    expected = "unreadable image" if dicom_reader_available() else "dicom reader not installed"
    record(subject, session, findings, expected, "dicom")

    subject = subjects[10]
    findings = sample_findings(rng)
    session, ses_dir = new_session(subject)  # listed and reported, but its folder never arrived
    missing = os.path.join(ses_dir, "mod-ct", f"{subject}_{session}_run-1_bp-chest_ct.nii.gz")
    partitions.append([subject, session, os.path.relpath(missing, root)])
    add_report(subject, session, findings)
    record(subject, session, findings, "missing file", "missing_file")

    # tables
    ages = rng.integers(25, 90, size=num_patients)
    _write_tsv(
        os.path.join(root, "participants.tsv"),
        ["participant", "modality_dicom", "gender", "age"],
        [[s, "['CT']", str(rng.choice(["M", "F"])), f"[{int(a)}]"] for s, a in zip(subjects, ages)],
    )
    for subject, rows in sessions_of.items():
        header = ["session_id", "study_date", "medical_evaluation"]
        _write_tsv(os.path.join(root, subject, f"{subject}_sessions.tsv"), header, rows)
    _write_tsv(os.path.join(root, "derivatives", "partitions.tsv"), ["subject", "session", "filepath"], partitions)
    header = ["ReportID", "PatientID", "Report", "Labels"] + (["Report_en"] if english_column else [])
    _write_tsv(os.path.join(root, LABELS_TSV), header, report_rows, latin1_rows)
    ehr = [
        [
            s,
            f"{int(rng.integers(1, 29)):02d}.{int(rng.integers(1, 13)):02d}.2020",
            str(rng.choice(["POSITIVO", "NEGATIVO"])),
        ]
        for s in subjects
    ]
    ehr_path = os.path.join(root, "derivatives", "EHR", "sil_reg_covid_posi.tsv")
    _write_tsv(ehr_path, ["participant", "date", "result"], ehr)
    with open(os.path.join(root, TRUTH_NAME), "w", encoding="utf-8") as f:
        json.dump(truth, f, indent=1)
    return truth
