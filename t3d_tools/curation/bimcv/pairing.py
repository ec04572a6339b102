"""Which images and reports become curated studies, and why the others are excluded: the per-study steps of
:func:`~t3d_tools.curation.bimcv.curate.curate` (pair the chosen volume with its report row, unpaired reports and
sessions, labels, empty translations) and the per-row step of :func:`~t3d_tools.curation.bimcv.curate.curate_csv`."""

from __future__ import annotations

import os
import re

from custom.data.checks import check_report_text
from custom.data.datalist import patient_id_of
from custom.errors import DataError
from t3d_tools.curation.bimcv.labels import canonical_terms, english_terms, parse_label_list
from t3d_tools.curation.bimcv.mids import Series
from t3d_tools.curation.bimcv.records import CuratedStudy, Exclusion, ProbeCache
from t3d_tools.curation.bimcv.reports import clean_report
from t3d_tools.curation.bimcv.sources import MidsTree

Kept = tuple[str, Series, str, dict, str, str]  # study_id, series, image, probe, raw report, cleaned report


def pair_reports(tree: MidsTree) -> list[Kept]:
    """Step 2: the chosen volumes whose report row is present, UTF-8 and not empty after cleaning, and whose voxels
    are not those of an earlier study; the others become study exclusions."""
    labels_path, columns_config, exclusions = tree.labels_path, tree.columns, tree.exclusions
    kept: list[Kept] = []
    seen_content: dict[str, str] = {}
    for study_id, (item, image, probe) in sorted(tree.chosen.items()):
        row = tree.reports.get(study_id)
        where = f"{labels_path}:{row.line}" if row else labels_path
        reason, detail = None, ""
        if row is None:
            reason, detail = "no report", f"no row with {columns_config.report_id} {item.session} in {labels_path}"
        elif not row.utf8:
            reason, detail = "report not UTF-8", f"{where}: expected UTF-8, found undecodable bytes"
        else:
            try:
                raw = check_report_text(row.values[columns_config.report], f"{where} column {columns_config.report}")
                cleaned = clean_report(raw)
                if not cleaned:
                    raise DataError(f"{where}: expected report text after cleaning, found nothing")
            except DataError as err:
                reason, detail = "empty report", str(err)
        if reason is None and probe["content_sha1"] in seen_content:
            reason, detail = "duplicate study", f"same voxels as {seen_content[probe['content_sha1']]}"
        if reason is not None:
            exclusions.append(Exclusion(study_id, item.subject, "study", item.rel_path, reason, detail))
            continue
        seen_content[probe["content_sha1"]] = study_id
        kept.append((study_id, item, image, probe, raw, cleaned))
    return kept


def exclude_unpaired(tree: MidsTree) -> None:
    """Step 3: report rows and listed sessions with no image series become exclusions ("no image")."""
    labels_path, exclusions = tree.labels_path, tree.exclusions
    known_studies = {s.study_id for s in tree.series} | set(tree.listed)  # listed-but-missing ones are excluded already
    for study_id, row in sorted(tree.reports.items()):
        if study_id not in known_studies:
            exclusions.append(
                Exclusion(
                    study_id,
                    study_id.split("_")[0],
                    "report",
                    f"{labels_path}:{row.line}",
                    "no image",
                    "no image series for this report",
                )
            )
    excluded_studies = {e.study_id for e in exclusions}
    for study_id, where in sorted(tree.session_rows.items()):  # a session listed with no image and no report row
        if study_id not in known_studies and study_id not in excluded_studies:
            subject, _, session = study_id.partition("_")
            exclusions.append(
                Exclusion(
                    study_id,
                    subject,
                    "session",
                    where,
                    "no image",
                    f"{where}: expected image series under {subject}/{session}, found none",
                )
            )


def label_studies(tree: MidsTree, kept: list[Kept]) -> list[CuratedStudy]:
    """Step 4: the ``Labels`` cell of each kept study as canonical terms; an unparsable cell excludes the study."""
    studies = []
    for study_id, item, image, probe, raw, cleaned in kept:
        row = tree.reports[study_id]
        cell = f"{tree.labels_path}:{row.line} column {tree.columns.labels}"
        try:
            terms = canonical_terms(parse_label_list(row.values[tree.columns.labels], cell))
        except DataError as err:
            tree.exclusions.append(
                Exclusion(study_id, item.subject, "study", item.rel_path, "unparsable labels", str(err))
            )
            continue
        extra = {
            "study_date": tree.study_dates.get(study_id, ""),
            "series": item.rel_path,
            "report_es": cleaned,
            "report_chars_raw": len(raw),
            "report_chars_clean": len(cleaned),
        }
        studies.append(CuratedStudy(study_id, item.subject, image, "", terms, probe, extra))
    return studies


def drop_empty_translations(tree: MidsTree, studies: list[CuratedStudy], english: list[str]) -> list[CuratedStudy]:
    """Step 6: set each study's English report; one with no letter or digit is excluded ("empty translation")."""
    empty = set()
    for study, text in zip(studies, english):
        study.report = text.strip()
        if not _has_words(study.report):  # nothing, whitespace or punctuation only
            empty.add(study.study_id)
            where = f"{tree.labels_path}:{tree.reports[study.study_id].line}"
            found = f"{study.report!r}" if study.report else "nothing"
            tree.exclusions.append(
                Exclusion(
                    study.study_id,
                    study.patient_id,
                    "study",
                    study.extra["series"],
                    "empty translation",
                    f"{where}: expected English text for a {len(study.extra['report_es'])}-character report, "
                    f"found {found}",
                )
            )
    return [study for study in studies if study.study_id not in empty]


def _has_words(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _entity(path: str, key: str) -> str | None:
    match = re.search(rf"(?:^|[/_\\]){key}-([A-Za-z0-9]+)", path)
    return f"{key}-{match.group(1)}" if match else None


def csv_study(
    csv_path: str,
    line: int,
    row: dict[str, str],
    columns: tuple[str, str, str | None],
    probes: ProbeCache,
    min_slices: int,
    uncertain_as: str,
    seen_content: dict[str, str],
) -> CuratedStudy | Exclusion:
    """One CSV row: the study it gives, or why it is left out (``seen_content``: voxel hash -> study kept earlier)."""
    image_column, report_column, patient_column = columns
    relative = row.get(image_column, "").strip()
    if not relative:
        return Exclusion(
            f"{os.path.basename(csv_path)}:{line}",
            "",
            "study",
            f"{csv_path}:{line}",
            "no image",
            f"{csv_path}:{line}: expected an image path in column '{image_column}', found nothing",
        )
    base = os.path.dirname(os.path.abspath(csv_path))
    image = relative if os.path.isabs(relative) else os.path.join(base, relative)
    stem = os.path.basename(relative).split(".")[0]
    # the BIMCV subject entity (sub-*) names the patient; without one, the project's one rule (the file name)
    given = (row.get(patient_column, "").strip() if patient_column else None) or _entity(relative, "sub")
    patient = given or patient_id_of({"image": relative})
    session = _entity(relative, "ses")
    study_id = f"{patient}_{session}" if session else stem
    try:
        report = clean_report(
            check_report_text(row.get(report_column, ""), f"{csv_path}:{line} column {report_column}")
        )
    except DataError as err:
        return Exclusion(study_id, patient, "study", relative, "empty report", str(err))
    try:
        if not os.path.isfile(image):
            raise DataError(f"{image}: image file not found")
        probe = probes.probe(image)
    except DataError as err:
        return Exclusion(study_id, patient, "study", relative, "unreadable image", str(err))
    if probe["shape"][2] < min_slices:
        return Exclusion(study_id, patient, "study", relative, "too few slices", f"{probe['shape'][2]} < {min_slices}")
    if probe["content_sha1"] in seen_content:
        detail = f"same voxels as {seen_content[probe['content_sha1']]}"
        return Exclusion(study_id, patient, "study", relative, "duplicate study", detail)
    seen_content[probe["content_sha1"]] = study_id
    terms = english_terms(report, uncertain_as)
    lengths = {"report_chars_raw": len(row[report_column]), "report_chars_clean": len(report)}
    return CuratedStudy(study_id, patient, os.path.abspath(image), report, terms, probe, lengths)
