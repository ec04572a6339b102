"""Curate BIMCV-R as distributed (``cyd0806/BIMCV-R``): ``BIMCV-R.csv`` plus a folder of CT volumes.

    python -m t3d_tools.curation.bimcv_r curate --root /data/BIMCV-R --out /data/bimcv_r_vlp --workers 8

Layout (sources and caveats in ``docs/ct_rate_curation.md``)::

    root/BIMCV-R.csv        PatientID, ReportID, Report (Spanish), Labels (PadChest terms), ..., Report_en
    root/ct/sub-S<..>_ses-E<..>_[acq-<n>_]run-<n>_bp-chest_ct.nii.gz

A row is a study (``PatientID`` + ``ReportID``); its volume is the file named by the row's image column when the CSV
has one (``image_column``; by default the first of ``ct_path`` / ``path`` that names a ``.nii.gz``), else the volume
folder's files whose ``sub-`` / ``ses-`` entities are the row's (the first by name; the others "not selected").

Outputs: those of :mod:`t3d_tools.curation.bimcv.curate` (pairs and classification datalists with label fractions,
``exclusions.tsv``, ``stats.json`` and plots, ``cache/probes.json``) with seeded patient-level splits (BIMCV-R has no
official split), labels from the chest-CT English labeler over ``Report_en``
(:mod:`t3d_tools.curation.bimcv_r.labels`), and ``stats.json["labeler_coverage"]`` measured against the release's
``Labels`` column. When that coverage is below ``min_label_coverage``, the training rows carry no ``label_vector``
(TCL's ``report_affinity: auto`` then uses calibrated text similarity, and ``labels`` stops with its one-line error)
and ``source.label_affinity`` says why; evaluation splits keep their vectors for zero-shot scoring.

Exclusions (a row or a file left out, with its reason): "image-report id mismatch" (the file's ``sub-`` / ``ses-``
are not the row's ``PatientID`` / ``ReportID``), "implausible slice spacing" (a header whose slice spacing exceeds
``max_slice_spacing`` mm, e.g. the whole field of view), "no report" (a volume no row names: the release has more
volumes than rows), "unreadable image", "too few slices", "duplicate study" (voxels of an earlier study), "empty
report". Errors (one line, nothing written): a missing column, a ``PatientID`` + ``ReportID`` twice, a volume file
name twice under the folder, a row whose volume is absent (unless ``subset``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Sequence

from custom.data.checks import check_report_text
from custom.errors import DataError
from t3d_tools.curation.bimcv.labels import canonical_terms, english_terms, parse_label_list
from t3d_tools.curation.bimcv.outputs import refuse_nothing_left, write_outputs
from t3d_tools.curation.bimcv.records import (
    PAIRS_NAME,
    STATS_NAME,
    CuratedStudy,
    Exclusion,
    ProbeCache,
    write_if_changed,
)
from t3d_tools.curation.bimcv.reports import clean_report
from t3d_tools.curation.bimcv.sources import read_csv_text
from t3d_tools.curation.bimcv_r.labels import CHEST_CT_PATTERNS, label_coverage

__all__ = ["curate"]

_IMAGE_COLUMNS = ("ct_path", "path")


def _entity(name: str, key: str) -> str | None:
    match = re.search(rf"(?:^|[/_]){key}-([A-Za-z0-9]+)", name)
    return f"{key}-{match.group(1)}" if match else None


def _index_volumes(folder: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for base, _, names in sorted(os.walk(folder)):
        for name in sorted(names):
            if name.endswith((".nii.gz", ".nii")):
                path = os.path.join(base, name)
                if name in found:
                    raise DataError(f"{path}: expected each volume file name once, found it also at {found[name]}")
                found[name] = path
    return found


def _read_rows(csv_path: str, required: dict[str, str]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    if not os.path.isfile(csv_path):
        raise DataError(f"{csv_path}: expected BIMCV-R's CSV, found no file")
    reader = csv.DictReader(io.StringIO(read_csv_text(csv_path), newline=""))
    header = reader.fieldnames or []
    for option, column in required.items():
        if column not in header:
            raise DataError(f"{csv_path}: expected column '{column}' (option '{option}'), found columns {header}")
    rows, line = [], reader.line_num + 1
    for row in reader:
        rows.append((line, {k: (v if v is not None else "") for k, v in row.items() if k is not None}))
        line = reader.line_num + 1
    return header, rows


def _prefixed(value: str, prefix: str) -> str:
    value = value.strip()
    return value if value.startswith(prefix) else prefix + value


def _match_rows(
    csv_path: str,
    rows: list[tuple[int, dict[str, str]]],
    volumes: dict[str, str],
    columns: dict[str, str],
    image_column: str | None,
    subset: bool,
) -> tuple[list[tuple[int, dict, str, str, str]], list[Exclusion]]:
    """``[(line, row, study_id, patient, image path)]`` and the exclusions of pairing rows with files."""
    matched, exclusions, seen, used = [], [], {}, set()
    by_entities: dict[tuple[str | None, str | None], list[str]] = {}
    for name in volumes:
        by_entities.setdefault((_entity(name, "sub"), _entity(name, "ses")), []).append(name)
    for line, row in rows:
        patient = _prefixed(row[columns["patient_column"]], "sub-")
        session = _prefixed(row[columns["study_column"]], "ses-")
        study_id = f"{patient}_{session}"
        if study_id in seen:
            raise DataError(
                f"{csv_path}:{line}: expected each {columns['patient_column']} + {columns['study_column']} once, "
                f"found {study_id} again (first at line {seen[study_id]})"
            )
        seen[study_id] = line
        named = os.path.basename(row.get(image_column, "").strip()) if image_column else ""
        candidates = [named] if named else sorted(by_entities.get((patient, session), []))
        present = [c for c in candidates if c in volumes]
        if not present:
            if subset:
                exclusions.append(Exclusion(study_id, patient, "study", f"{csv_path}:{line}", "not downloaded"))
                continue
            wanted = named or f"a {patient}_{session}_*.nii.gz file"
            raise DataError(
                f"{csv_path}:{line}: expected {wanted} in the volume folder, found none (--subset for a "
                f"partial download)"
            )
        chosen = present[0]
        used.update(present)
        if (_entity(chosen, "sub"), _entity(chosen, "ses")) != (patient, session):
            detail = f"{csv_path}:{line}: row is {patient}/{session}, file is {chosen}"
            exclusions.append(Exclusion(study_id, patient, "study", chosen, "image-report id mismatch", detail))
            continue
        for other in present[1:]:
            exclusions.append(Exclusion(study_id, patient, "series", other, "not selected", f"{chosen} kept"))
        matched.append((line, row, study_id, patient, volumes[chosen]))
    for name in sorted(set(volumes) - used):
        patient = _entity(name, "sub") or ""
        exclusions.append(
            Exclusion(
                f"{patient}_{_entity(name, 'ses') or ''}",
                patient,
                "series",
                name,
                "no report",
                f"no row of {csv_path} names this volume",
            )
        )
    return matched, exclusions


def curate(
    root: str,
    out: str,
    csv_name: str = "BIMCV-R.csv",
    volume_folder: str = "ct",
    report_column: str = "Report_en",
    labels_column: str = "Labels",
    patient_column: str = "PatientID",
    study_column: str = "ReportID",
    image_column: str | None = None,
    subset: bool = False,
    workers: int = 1,
    min_positive: int = 10,
    min_slices: int = 16,
    max_slice_spacing: float = 20.0,
    uncertain_as: str = "positive",
    min_label_coverage: float = 0.6,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Curate BIMCV-R at ``root`` into ``out`` (see the module docstring); returns the summary of
    :func:`~t3d_tools.curation.bimcv.outputs.write_outputs` plus the labeler coverage."""
    root, out = os.path.abspath(root), os.path.abspath(out)
    csv_path = os.path.join(root, csv_name)
    columns = {
        "patient_column": patient_column,
        "study_column": study_column,
        "report_column": report_column,
        "labels_column": labels_column,
    }
    header, rows = _read_rows(csv_path, columns)
    if image_column is None:
        image_column = next(
            (
                c
                for c in _IMAGE_COLUMNS
                if c in header and any(r.get(c, "").strip().endswith((".nii.gz", ".nii")) for _, r in rows)
            ),
            None,
        )
    elif image_column not in header:
        raise DataError(f"{csv_path}: expected column '{image_column}' (option 'image_column'), found columns {header}")
    folder = os.path.join(root, volume_folder)
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: expected BIMCV-R's volume folder (option 'volume_folder'), found no folder")
    volumes = _index_volumes(folder)
    matched, exclusions = _match_rows(csv_path, rows, volumes, columns, image_column, subset)
    # every input checked: from here on the run writes
    probes = ProbeCache(os.path.join(out, "cache", "probes.json"))
    probes.prefill([m[4] for m in matched], workers, progress)
    studies, references, seen_content = [], [], {}
    for line, row, study_id, patient, image in matched:
        where = f"{csv_path}:{line}"
        relative = os.path.relpath(image, root)
        try:
            report = clean_report(check_report_text(row[report_column], f"{where} column {report_column}"))
            if not report:
                raise DataError(f"{where} column {report_column}: expected report text after cleaning, found nothing")
        except DataError as err:
            exclusions.append(Exclusion(study_id, patient, "study", relative, "empty report", str(err)))
            continue
        try:
            probe = probes.probe(image)
        except DataError as err:
            exclusions.append(Exclusion(study_id, patient, "study", relative, "unreadable image", str(err)))
            continue
        reason, detail = None, ""
        if probe["shape"][2] < min_slices:
            reason, detail = "too few slices", f"{probe['shape'][2]} < {min_slices}"
        elif probe["spacing"][2] > max_slice_spacing:
            reason = "implausible slice spacing"
            detail = f"header slice spacing {probe['spacing'][2]} mm > {max_slice_spacing} mm (a field of view?)"
        elif probe["content_sha1"] in seen_content:
            reason, detail = "duplicate study", f"same voxels as {seen_content[probe['content_sha1']]}"
        if reason:
            exclusions.append(Exclusion(study_id, patient, "study", relative, reason, detail))
            continue
        seen_content[probe["content_sha1"]] = study_id
        try:
            reference = canonical_terms(parse_label_list(row[labels_column], f"{where} column {labels_column}"))
        except DataError:
            reference = []
        references.append(reference)
        terms = english_terms(report, uncertain_as, CHEST_CT_PATTERNS)
        lengths = {"report_chars_raw": len(row[report_column]), "report_chars_clean": len(report)}
        studies.append(CuratedStudy(study_id, patient, image, report, terms, probe, lengths))
    refuse_nothing_left(csv_path, studies, exclusions)
    coverage = label_coverage(references, [s.terms for s in studies], list(CHEST_CT_PATTERNS))
    refused = coverage["coverage"] is not None and coverage["coverage"] < min_label_coverage
    source = {
        "kind": "bimcv-r",
        "csv": csv_path,
        "uncertain_as": uncertain_as,
        "min_positive": min_positive,
        "min_slices": min_slices,
        "seed": seed,
        "label_affinity": (
            f"refused: the labeler covers {coverage['coverage']:.0%} of the Labels column's finding mentions "
            f"(< min_label_coverage {min_label_coverage:.0%}); training rows carry no label_vector"
            if refused
            else "allowed"
        ),
    }
    summary = write_outputs(
        out, studies, exclusions, min_positive, val_fraction, test_fraction, fractions, seed, source, {}, {}
    )
    pairs_path, stats_path = os.path.join(out, PAIRS_NAME), os.path.join(out, STATS_NAME)
    with open(stats_path, encoding="utf-8") as f:
        stats = json.load(f)
    stats["labeler_coverage"] = {**coverage, "min_label_coverage": min_label_coverage, "refused": refused}
    write_if_changed(stats_path, json.dumps(stats, indent=1))
    if refused:
        with open(pairs_path, encoding="utf-8") as f:
            pairs = json.load(f)
        for row in pairs["training"]:
            row.pop("label_vector", None)
        write_if_changed(pairs_path, json.dumps(pairs, indent=1, ensure_ascii=False))
    return {**summary, "labeler_coverage": coverage["coverage"], "label_affinity_refused": refused}
