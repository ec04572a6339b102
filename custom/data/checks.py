"""One-line input checks of reports, datalists and patients, shared by the loaders, the datalist readers and the
integrity checker (the checks of an image volume itself are :mod:`custom.transforms.volume_checks`).

Each check raises :class:`~custom.errors.DataError` whose message names the file (or datalist row / config key), what
was expected and what was found, so a bad case among thousands is found from the log line alone.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import unicodedata
from collections import defaultdict
from collections.abc import Mapping, Sequence

from custom.errors import DataError

__all__ = [
    "check_report_text",
    "read_text_file",
    "read_json_object",
    "read_report",
    "glob_images",
    "refuse_output_collisions",
    "normalise_patient_id",
    "given_patient_id",
    "patient_split_problems",
    "study_of",
    "duplicate_study_problems",
    "refuse_patient_leakage",
]


#: the longest report kept (characters; ``T3D_MAX_REPORT_CHARS`` sets another): real reports are 100-300 words, a
#: 20 MB "report" would be read, cleaned and tokenised whole
DEFAULT_MAX_REPORT_CHARS = 20_000
#: characters that print as nothing: control (Cc), format (Cf: zero-width space/joiners, BOM, direction marks)
_INVISIBLE_CATEGORIES = ("Cc", "Cf")


def max_report_chars(max_chars: int | None = None) -> int:
    """``max_chars`` if given, else ``T3D_MAX_REPORT_CHARS``, else :data:`DEFAULT_MAX_REPORT_CHARS`."""
    if max_chars is not None:
        return int(max_chars)
    configured = os.environ.get("T3D_MAX_REPORT_CHARS", "").strip()
    try:
        return int(configured) if configured else DEFAULT_MAX_REPORT_CHARS
    except ValueError:
        raise DataError(f"T3D_MAX_REPORT_CHARS: expected a number of characters, found {configured!r}") from None


def check_report_text(report: object, source: str, max_chars: int | None = None) -> str:
    """A report must be a string with visible text: not empty after stripping whitespace, control and zero-width
    characters (a report of NULs tokenises to ``[CLS][SEP]``). Returns it stripped; a report longer than
    :func:`max_report_chars` is truncated to it with a warning that gives the count."""
    if isinstance(report, bytes):
        try:
            report = report.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{source}: expected UTF-8 report text, found undecodable bytes ({err.reason})") from None
    if not isinstance(report, str):
        raise DataError(f"{source}: expected report text, found {type(report).__name__}")
    if not report.strip():
        raise DataError(f"{source}: expected a non-empty report, found {'whitespace only' if report else 'nothing'}")
    visible = "".join(c for c in report if unicodedata.category(c) not in _INVISIBLE_CATEGORIES)
    if not visible.strip():
        raise DataError(
            f"{source}: expected a non-empty report, found only control or zero-width characters "
            f"({len(report)}, e.g. {report.strip()[:3]!r})"
        )
    report = report.strip()
    limit = max_report_chars(max_chars)
    if len(report) > limit:
        logging.getLogger(__name__).warning(
            f"{source}: report of {len(report)} characters truncated to the first {limit} (T3D_MAX_REPORT_CHARS)"
        )
        report = report[:limit]
    return report


def read_text_file(path: str, max_chars: int | None = None) -> str:
    """Read a report/text file strictly as UTF-8, naming the file and byte offset on failure; with ``max_chars``
    only the bytes that can hold that many characters (4 per character) are read."""
    with open(path, "rb") as f:
        raw = f.read() if max_chars is None else f.read(4 * int(max_chars) + 4)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        if max_chars is not None and err.reason == "unexpected end of data" and err.start >= len(raw) - 4:
            return raw[: err.start].decode("utf-8")  # the read stopped inside a character: not the file's fault
        raise DataError(f"{path}: expected UTF-8 text, found an invalid byte at offset {err.start}") from None


def read_json_object(path: str, config_key: str = "datalist") -> dict:
    """A JSON object from ``path`` (the file named by config key ``config_key``); one-line :class:`DataError` when
    the file is missing, not JSON, or not an object."""
    if not os.path.isfile(path):
        raise DataError(f"{config_key}: expected a JSON file, found no file at {path}")
    try:
        content = json.loads(read_text_file(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: expected JSON, found a syntax error at line {err.lineno}") from None
    if not isinstance(content, dict):
        raise DataError(f"{path}: expected a JSON object, found {type(content).__name__}")
    return content


def read_report(report: object, base_dir: str, source: str) -> str:
    """A datalist's ``report``: inline text, or the path of a ``.txt`` file (one token ending in ``.txt``, relative to
    ``base_dir``) read strictly as UTF-8; returns the checked, stripped text (:func:`check_report_text`)."""
    if isinstance(report, str) and report.lower().endswith(".txt") and len(report.split()) == 1:
        path = report if os.path.isabs(report) else os.path.join(base_dir, report)
        if not os.path.isfile(path):
            raise DataError(f"{source}: expected the report file {path}, found no file")
        limit = max_report_chars()
        report = read_text_file(path, limit + 1)  # a 20 MB file is not read whole
        if len(report) > limit:
            logging.getLogger(__name__).warning(
                f"{path}: report of {os.path.getsize(path)} bytes truncated to the first {limit} characters "
                "(T3D_MAX_REPORT_CHARS)"
            )
            report = report[:limit]
        source = path
    return check_report_text(report, source)


def glob_images(pattern: str, config_key: str = "images") -> list[str]:
    """The sorted files matching ``pattern`` (an inference config's ``images``); a one-line :class:`DataError` naming
    the config key and the pattern when none match (an inference over no image would exit 0 having written nothing)."""
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise DataError(f"{config_key}: expected image files matching {pattern}, found none")
    return paths


def _output_stem(path: str) -> str:
    """The file name MONAI's ``SaveImage`` derives an output from: the base name without ``.gz`` and one more
    extension (``patA/ct.nii.gz`` -> ``ct``)."""
    name = os.path.basename(path)
    stem, extension = os.path.splitext(name)
    if extension == ".gz":
        stem = os.path.splitext(stem)[0]
    return stem


def refuse_output_collisions(images: Sequence, postfix: str) -> bool:
    """Refuse (one line naming both inputs) two inference or evaluation inputs whose outputs would get one file name
    in the flat output folder (``patA/ct.nii.gz`` and ``patB/ct.nii.gz`` both write ``ct_<postfix>.nii.gz``: the
    second would silently overwrite the first). ``images``: image paths (inference) or datalist rows with an
    ``image`` (the evaluated split). A row of several files (one per channel) is named by its first, as MONAI's
    writer names it. True otherwise (a config ``initialize`` item)."""
    first_of: dict[str, str] = {}
    for item in images:
        image = item.get("image") if isinstance(item, Mapping) else item
        path = str(image[0] if isinstance(image, (list, tuple)) and image else image)
        output = f"{_output_stem(path)}_{postfix}"
        if output in first_of and os.path.abspath(first_of[output]) != os.path.abspath(path):
            raise DataError(
                f"{first_of[output]} and {path}: expected inputs whose outputs have distinct names, found both "
                f"writing {output}.* to the one output folder; rename one, or run them with separate --output_dir"
            )
        first_of.setdefault(output, path)
    return True


def normalise_patient_id(value: object) -> str:
    """The form two patient ids are compared in: whitespace collapsed and trimmed, case folded (``"ID "``, ``"id"``
    and ``"Id"`` are one patient). Every leakage check compares ids through this one function."""
    return " ".join(str(value).split()).casefold()


def _is_patient_key(key: object) -> bool:
    return isinstance(key, str) and key.replace("_", "").replace("-", "").casefold() == "patientid"


def given_patient_id(row: Mapping, patient_key: str = "patient_id") -> str | None:
    """The patient id a row states, trimmed: its ``patient_key``, else any alias of it the readers accept
    (``PatientID``, ``patientId``, ``Patient_ID``, ...); None when it states none (or only blanks)."""
    keys = [patient_key] + [k for k in row if k != patient_key and _is_patient_key(k)]
    for key in keys:
        value = row.get(key)
        if value is not None and str(value).strip():
            return " ".join(str(value).split())
    return None


def patient_split_problems(splits: Mapping[str, Sequence[dict]], patient_key: str = "patient_id") -> list[str]:
    """One line per patient whose rows sit in more than one split (rows stating no patient id are skipped; ids are
    compared by :func:`normalise_patient_id`, under ``patient_key`` or any alias of it).

    The single definition of patient leakage: the integrity checker reports these lines, every training bundle
    refuses to start on them (:func:`refuse_patient_leakage`)."""
    splits_of_patient: dict[str, set[str]] = defaultdict(set)
    shown: dict[str, set[str]] = defaultdict(set)
    for split, rows in splits.items():
        for row in rows:
            given = given_patient_id(row, patient_key) if isinstance(row, Mapping) else None
            if given is not None:
                splits_of_patient[normalise_patient_id(given)].add(split)
                shown[normalise_patient_id(given)].add(given)
    return [
        f"{patient_key} {' / '.join(repr(v) for v in sorted(shown[patient]))}: expected in one split, found in "
        f"{sorted(found)}"
        if len(shown[patient]) > 1
        else f"{patient_key} {next(iter(shown[patient]))}: expected in one split, found in {sorted(found)}"
        for patient, found in sorted(splits_of_patient.items())
        if len(found) > 1
    ]


def study_of(row: Mapping) -> str | None:
    """What a row's study is: its (first) image file, else its ``study_id``; None for neither. (The image, not
    ``study_id``: readers derive ``study_id`` from the file name, which repeats across ``<patient>/ct.nii.gz``.)"""
    image = row.get("image")
    image = image[0] if isinstance(image, (list, tuple)) and image else image
    if isinstance(image, str) and image:
        return f"image {os.path.normpath(image)}"
    if row.get("study_id") is not None and str(row["study_id"]).strip():
        return f"study_id {' '.join(str(row['study_id']).split())}"
    return None


def duplicate_study_problems(splits: Mapping[str, Sequence[dict]]) -> list[str]:
    """One line per study (:func:`study_of`) that appears in more than one row of one split (a study repeated 8x in
    training is weighted 8x and, across validation rows, counted 8x)."""
    problems = []
    for split, rows in splits.items():
        rows_of: dict[str, list[int]] = defaultdict(list)
        for index, row in enumerate(rows):
            study = study_of(row) if isinstance(row, Mapping) else None
            if study is not None:
                rows_of[study].append(index)
        problems += [
            f"{study}: expected once in '{split}', found in {len(indices)} rows (#{', #'.join(map(str, indices[:5]))})"
            for study, indices in rows_of.items()
            if len(indices) > 1
        ]
    return problems


def refuse_patient_leakage(splits: Mapping[str, Sequence[dict]], source: str, patient_key: str = "patient_id") -> bool:
    """Raise :class:`DataError` naming ``source`` and the first leaked patient when a patient is in two splits
    (validation scores of a model that trained on the same patient are not held-out), or the first study repeated
    within one split; True otherwise."""
    problems = patient_split_problems(splits, patient_key)
    if problems:
        more = f" (and {len(problems) - 1} more patients)" if len(problems) > 1 else ""
        raise DataError(f"{source}: {problems[0]}{more}; a patient's studies must all be in one split")
    duplicates = duplicate_study_problems(splits)
    if duplicates:
        more = f" (and {len(duplicates) - 1} more)" if len(duplicates) > 1 else ""
        raise DataError(f"{source}: {duplicates[0]}{more}; each study must be one row")
    return True
