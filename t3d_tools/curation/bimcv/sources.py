"""The inputs of a BIMCV-COVID19 curation: the MIDS tree's TSV tables (reports, participants, partitions, EHR results,
sessions) read into plain dictionaries, and one volume chosen per study from the tree's image series."""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm import tqdm

from custom.errors import DataError
from t3d_tools.curation.bimcv.mids import Series, choose_study_volume, convert_dicom_series, static_rejection, walk_mids
from t3d_tools.curation.bimcv.records import Exclusion, ProbeCache
from t3d_tools.curation.bimcv.tables import BimcvColumns, TsvRow, read_tsv


def _prefixed(value: str, prefix: str) -> str:
    value = value.strip()
    return value if value.startswith(prefix) else prefix + value


def read_reports(
    path: str, columns: BimcvColumns, extra_column: str | None
) -> tuple[dict[str, TsvRow], list[Exclusion]]:
    """Report rows keyed by study id (``sub-*_ses-*``); later rows with an already seen id become exclusions."""
    required = {
        "report_id": columns.report_id,
        "patient_id": columns.patient_id,
        "report": columns.report,
        "labels": columns.labels,
    }
    if extra_column:
        required["translation"] = extra_column
    _, rows = read_tsv(path, required)
    by_study: dict[str, TsvRow] = {}
    exclusions = []
    for row in rows:
        subject = _prefixed(row.values[columns.patient_id], "sub-")
        study_id = f"{subject}_{_prefixed(row.values[columns.report_id], 'ses-')}"
        if study_id in by_study:
            exclusions.append(
                Exclusion(
                    study_id,
                    subject,
                    "report",
                    f"{path}:{row.line}",
                    "duplicate report row",
                    f"same ReportID as line {by_study[study_id].line}",
                )
            )
        else:
            by_study[study_id] = row
    return by_study, exclusions


def read_participants(root: str, columns: BimcvColumns) -> dict[str, dict]:
    """``{participant: {"age", "gender"}}`` from ``participants.tsv`` (empty when the table is absent)."""
    path = os.path.join(root, "participants.tsv")
    if not os.path.isfile(path):
        return {}
    header, rows = read_tsv(path, {"participant": columns.participant})
    participants = {}
    for row in rows:
        age = re.findall(r"\d+", row.values.get(columns.age, ""))  # "[67]" in the real tables
        participants[_prefixed(row.values[columns.participant], "sub-")] = {
            "age": int(age[0]) if age else None,
            "gender": row.values.get(columns.gender, "").strip() or None,
        }
    return participants


def read_partitions(root: str, columns: BimcvColumns) -> dict[str, list[str]]:
    """Files listed in ``derivatives/partitions.tsv`` by study id (empty when the table is absent)."""
    path = os.path.join(root, "derivatives", "partitions.tsv")
    if not os.path.isfile(path):
        return {}
    _, rows = read_tsv(
        path,
        {
            "partition_subject": columns.partition_subject,
            "partition_session": columns.partition_session,
            "partition_filepath": columns.partition_filepath,
        },
    )
    listed: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        subject = _prefixed(row.values[columns.partition_subject], "sub-")
        listed[f"{subject}_{_prefixed(row.values[columns.partition_session], 'ses-')}"].append(
            row.values[columns.partition_filepath].strip()
        )
    return listed


def missing_listed_files(root: str, listed: dict[str, list[str]]) -> list[Exclusion]:
    """Listed files that are on disk neither relative to ``root`` nor to its parent (releases use both forms)."""
    exclusions = []
    for study_id, paths in sorted(listed.items()):
        for rel in paths:
            if not any(os.path.exists(os.path.join(base, rel)) for base in (root, os.path.dirname(root))):
                exclusions.append(
                    Exclusion(
                        study_id,
                        study_id.split("_")[0],
                        "series",
                        rel,
                        "missing file",
                        "listed in derivatives/partitions.tsv, not on disk",
                    )
                )
    return exclusions


def read_ehr_results(root: str, columns: BimcvColumns) -> dict[str, list[str]]:
    """Test results (POSITIVO / NEGATIVO) per participant from ``derivatives/EHR/*.tsv``."""
    folder = os.path.join(root, "derivatives", "EHR")
    results: dict[str, list[str]] = defaultdict(list)
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith(".tsv"):
            _, rows = read_tsv(
                os.path.join(folder, name),
                {"ehr_participant": columns.ehr_participant, "ehr_result": columns.ehr_result},
            )
            for row in rows:
                participant = _prefixed(row.values[columns.ehr_participant], "sub-")
                results[participant].append(row.values[columns.ehr_result].strip())
    return results


def read_sessions(root: str, subjects: Sequence[str], columns: BimcvColumns) -> tuple[dict[str, str], dict[str, str]]:
    """``({study_id: study_date}, {study_id: "<sessions.tsv>:<line>"})`` from every ``sub-*/sub-*_sessions.tsv``."""
    dates, where = {}, {}
    for subject in subjects:
        path = os.path.join(root, subject, f"{subject}_sessions.tsv")
        if os.path.isfile(path):
            _, rows = read_tsv(path, {"session_id": columns.session_id})
            for row in rows:
                study_id = f"{subject}_{_prefixed(row.values[columns.session_id], 'ses-')}"
                dates[study_id] = row.values.get(columns.study_date, "").strip()
                where.setdefault(study_id, f"{path}:{row.line}")
    return dates, where


def subject_folders(root: str) -> list[str]:
    """``sub-*`` folders of the tree (a subject whose sessions all lack images has no series but a sessions table)."""
    if not os.path.isdir(root):
        return []
    return sorted(n for n in os.listdir(root) if n.startswith("sub-") and os.path.isdir(os.path.join(root, n)))


def select_volumes(
    root: str, series: list[Series], probes: ProbeCache, min_slices: int, dicom_dir: str, progress: bool
) -> tuple[dict[str, tuple[Series, str, dict]], list[Exclusion]]:
    """Apply the series rules of :mod:`t3d_tools.curation.bimcv.mids`; ``{study_id: (series, nifti path, probe)}``."""
    exclusions: list[Exclusion] = []
    candidates: dict[str, list[tuple[Series, str, dict]]] = defaultdict(list)
    for item in tqdm(series, desc="probe series", unit="series", disable=not progress):
        source = os.path.join(root, item.rel_path)
        reason, detail = static_rejection(item) or (None, "")
        if reason is None:
            try:
                image = source
                if item.image_format == "dicom":
                    image = os.path.join(dicom_dir, f"{item.study_id}_{os.path.basename(item.rel_path)}.nii.gz")
                    if not os.path.isfile(image):
                        convert_dicom_series(source, image)
                probe = probes.probe(image)
                if probe["shape"][2] < min_slices:
                    reason, detail = "too few slices", f"{probe['shape'][2]} < {min_slices}"
                else:
                    candidates[item.study_id].append((item, image, probe))
            except DataError as err:
                reason, detail = "unreadable image", str(err)
        if reason is not None:
            exclusions.append(Exclusion(item.study_id, item.subject, "series", item.rel_path, reason, detail))
    chosen = {}
    for study_id, options in sorted(candidates.items()):
        index = choose_study_volume([(s, p) for s, _, p in options])
        chosen[study_id] = options[index]
        for i, (item, _, _) in enumerate(options):
            if i != index:
                exclusions.append(
                    Exclusion(
                        study_id,
                        item.subject,
                        "series",
                        item.rel_path,
                        "not selected",
                        f"one volume per study: {options[index][0].rel_path} preferred",
                    )
                )
    return chosen, exclusions


@dataclass
class MidsTree:
    """What :func:`~t3d_tools.curation.bimcv.curate.curate` reads from the tree before pairing: the tables, the series,
    the volume chosen per study and the exclusions so far (the later steps add theirs)."""

    root: str
    labels_tsv: str  # as given, relative to root
    labels_path: str
    columns: BimcvColumns
    translated_column: str | None  # the labels TSV column with English reports, if translation is "column:<name>"
    reports: dict[str, TsvRow]
    participants: dict[str, dict]
    series: list[Series]
    study_dates: dict[str, str]
    session_rows: dict[str, str]
    probes: ProbeCache
    chosen: dict[str, tuple[Series, str, dict]]
    listed: dict[str, list[str]]
    exclusions: list[Exclusion]


def read_tree(
    root: str,
    out: str,
    labels_tsv: str,
    columns: BimcvColumns,
    translated_column: str | None,
    min_slices: int,
    dry_run: bool,
    progress: bool,
) -> MidsTree:
    """Step 1: the reports, participants and sessions tables, the series of the tree and one volume per study."""
    labels_path = os.path.join(root, labels_tsv)
    reports, exclusions = read_reports(labels_path, columns, translated_column)
    participants = read_participants(root, columns)
    series = walk_mids(root)
    subjects = sorted({s.subject for s in series} | set(subject_folders(root)))
    study_dates, session_rows = read_sessions(root, subjects, columns)
    probes = ProbeCache(None if dry_run else os.path.join(out, "cache", "probes.json"))
    with tempfile.TemporaryDirectory() as scratch:  # DICOM conversions of a dry run land here and vanish
        dicom_dir = scratch if dry_run else os.path.join(out, "images")
        chosen, series_exclusions = select_volumes(root, series, probes, min_slices, dicom_dir, progress)
    listed = read_partitions(root, columns)
    exclusions += series_exclusions + missing_listed_files(root, listed)
    return MidsTree(
        root=root,
        labels_tsv=labels_tsv,
        labels_path=labels_path,
        columns=columns,
        translated_column=translated_column,
        reports=reports,
        participants=participants,
        series=series,
        study_dates=study_dates,
        session_rows=session_rows,
        probes=probes,
        chosen=chosen,
        listed=listed,
        exclusions=exclusions,
    )


def read_csv_text(path: str) -> str:
    """The CSV as text, strictly UTF-8 (a leading byte-order mark dropped). A file with bytes that are not UTF-8 is
    one error naming the file, the byte offset and the line: such a file is nearly always in another encoding as a
    whole (a Latin-1 / Windows-1252 export), so excluding just the rows with accents would silently lose data."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: CSV file not found") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}: expected UTF-8 text, found byte 0x{raw[err.start]:02x} at offset {err.start} "
            f"(line {line}); re-encode the whole file as UTF-8"
        ) from None


def read_csv_rows(csv_path: str, columns: tuple[str, str, str | None]) -> list[tuple[int, dict[str, str]]]:
    """``[(line, row)]`` of the CSV once its header has the ``(image, report, patient)`` columns asked for."""
    image_column, report_column, patient_column = columns
    reader = csv.DictReader(io.StringIO(read_csv_text(csv_path), newline=""))
    header = reader.fieldnames or []
    for option, column in (
        ("image_column", image_column),
        ("report_column", report_column),
        ("patient_column", patient_column),
    ):
        if column and column not in header:
            raise DataError(f"{csv_path}: expected column '{column}' (option '{option}'), found columns {header}")
    rows, line = [], reader.line_num + 1
    for row in reader:  # a quoted report may span lines: a row's line is where it starts
        rows.append((line, {k: v if v is not None else "" for k, v in row.items() if k is not None}))
        line = reader.line_num + 1
    return rows
