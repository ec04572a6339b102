"""Datalists: the one reader of this project's datalists, the one way a message locates a row, and the one rule for
who a row's patient is. Every loader (segmentation, classification, image-report pairs), the integrity checker and
the label fractions go through it.

Forms read:

- MONAI JSON: ``{"training": [row, ...], "validation": [...], "test": [...], ...}`` plus metadata keys
  (``class_names``, ``finding_names``, ``labels``, ...). A row is a dict with ``image`` (a path, or a list of paths,
  one per channel) and the task's keys, or, as in the Decathlon ``test`` list, a bare image path.
- CSV, BIMCV-R style: columns ``path`` and ``Report_en``, optional ``split``, ``patient_id`` / ``PatientID``,
  ``study_id``; each line becomes the row ``{"image", "report", "patient_id", "study_id"}`` of its split
  (``training`` without a ``split`` column).

Relative paths resolve against the dataset folder, by default the datalist's own folder (MONAI's ``dataset_0.json``).
A message about a row starts with :func:`row_location`: ``<datalist> [<split> #<index>]``.
"""

from __future__ import annotations

import csv
import io
import os

from custom.data.checks import given_patient_id, normalise_patient_id, read_json_object, read_text_file
from custom.errors import DataError

__all__ = [
    "CSV_IMAGE_COLUMN",
    "CSV_REPORT_COLUMN",
    "read_datalist",
    "read_csv_datalist",
    "read_split",
    "row_location",
    "dataset_base",
    "resolve_paths",
    "patient_id_of",
    "patient_group_of",
]

CSV_IMAGE_COLUMN = "path"
CSV_REPORT_COLUMN = "Report_en"


def row_location(datalist: str, split: str, index: int) -> str:
    """``<datalist> [<split> #<index>]``: how every message names a row."""
    return f"{datalist} [{split} #{index}]"


def patient_id_of(row: dict | str, patient_key: str = "patient_id") -> str:
    """The one rule for who a row's patient is: its ``patient_key`` (or an alias such as ``PatientID``:
    :func:`custom.data.checks.given_patient_id`, whitespace trimmed) when given and non-empty, else the file name of
    its (first) image up to the first dot (``img0001.nii.gz`` -> ``img0001``). Rows whose files share a name in
    different folders (``<patient>/ct.nii.gz``) must therefore carry a ``patient_id``. Two ids are compared with
    :func:`custom.data.checks.normalise_patient_id` (case and whitespace ignored)."""
    if isinstance(row, str):
        row = {"image": row}
    given = given_patient_id(row, patient_key)
    if given is not None:
        return given
    image = row.get("image")
    image = image[0] if isinstance(image, (list, tuple)) and image else image
    return os.path.basename(str(image)).split(".")[0]


def patient_group_of(row: dict | str, patient_key: str = "patient_id") -> str:
    """The key rows are grouped by patient with (subsets, held-out splits): :func:`patient_id_of` through
    :func:`custom.data.checks.normalise_patient_id`, so ``"P1 "`` and ``"p1"`` are one patient here exactly as they
    are to the leakage check."""
    return normalise_patient_id(patient_id_of(row, patient_key))


def dataset_base(datalist: str, dataset_dir: str | None = None) -> str:
    """Where a datalist's relative paths start: ``dataset_dir``, else the datalist's folder."""
    return dataset_dir or os.path.dirname(os.path.abspath(datalist))


def resolve_paths(value: str | list, base_dir: str) -> str | list:
    """A path (or a list of paths) made absolute against ``base_dir`` and normalised."""
    if isinstance(value, (list, tuple)):
        return [resolve_paths(v, base_dir) for v in value]
    return os.path.normpath(value if os.path.isabs(value) else os.path.join(base_dir, value))


def read_csv_datalist(path: str) -> dict[str, list[dict]]:
    """A BIMCV-R style CSV as ``{split: rows}`` in the JSON datalist's row form (see the module docstring)."""
    reader = csv.DictReader(io.StringIO(read_text_file(path)))
    columns = reader.fieldnames or []
    for column in (CSV_IMAGE_COLUMN, CSV_REPORT_COLUMN):
        if column not in columns:
            raise DataError(f"{path}: expected a '{column}' column, found columns {columns}")
    splits: dict[str, list[dict]] = {}
    for line in reader:
        row = {"image": line[CSV_IMAGE_COLUMN], "report": line[CSV_REPORT_COLUMN]}
        row["patient_id"] = patient_id_of({**row, **{k: v for k, v in line.items() if k is not None}})
        row["study_id"] = line.get("study_id") or os.path.basename(row["image"]).split(".")[0]
        splits.setdefault(line["split"] if "split" in columns else "training", []).append(row)
    return splits


def read_datalist(path: str, config_key: str = "datalist") -> dict:
    """The datalist at ``path`` as a dict of splits (and, for JSON, its other keys); one-line :class:`DataError`
    naming ``config_key`` when there is no such file, and naming the file when it is not a datalist."""
    if not os.path.isfile(path):
        raise DataError(f"{config_key}: expected a JSON or CSV datalist file, found no file at {path}")
    if path.lower().endswith(".csv"):
        return read_csv_datalist(path)
    return read_json_object(path, config_key)


def _checked_image_value(value: object, where: str) -> None:
    listed = value if isinstance(value, list) else [value]
    if not listed or not all(isinstance(p, str) and p for p in listed):
        raise DataError(f"{where} key 'image': expected a file path or a list of file paths, found {value!r}")


def read_split(
    datalist: str,
    split: str = "training",
    dataset_dir: str | None = None,
    path_keys: tuple[str, ...] = ("image",),
    config_key: str = "datalist",
) -> list[dict]:
    """The rows of ``split``, each a new dict with ``image`` present and well-formed, every ``path_keys`` entry it
    has made absolute (against :func:`dataset_base`) and existing on disk, and ``patient_id`` set by
    :func:`patient_id_of`. A missing split, an empty split or a bad row stops with one line naming the file (and
    the row); the task's own keys are the caller's to check."""
    content = read_datalist(datalist, config_key)
    if split not in content:
        if datalist.lower().endswith(".csv"):
            raise DataError(f"{datalist}: expected '{split}' rows (a 'split' column), found splits {sorted(content)}")
        raise DataError(f"{datalist}: expected a '{split}' list, found keys {sorted(content)}")
    if not isinstance(content[split], list):
        raise DataError(f"{datalist}: expected '{split}' to be a list of rows, found {type(content[split]).__name__}")
    if not content[split]:
        raise DataError(f"{datalist}: expected at least one '{split}' row, found an empty split")
    base = dataset_base(datalist, dataset_dir)
    rows = []
    for index, row in enumerate(content[split]):
        where = row_location(datalist, split, index)
        row = {"image": row} if isinstance(row, str) else row  # the Decathlon "test" list holds bare paths
        if not isinstance(row, dict) or "image" not in row:
            found = sorted(row) if isinstance(row, dict) else repr(row)
            raise DataError(f"{where}: expected a row with an 'image' key, found {found}")
        _checked_image_value(row["image"], where)
        row = dict(row)
        for key in path_keys:
            if key not in row:
                continue
            row[key] = resolve_paths(row[key], base)
            for path in row[key] if isinstance(row[key], list) else [row[key]]:
                if not os.path.isfile(path):
                    raise DataError(f"{where}: {key} file not found: {path}")
        row["patient_id"] = patient_id_of(row)
        rows.append(row)
    return rows
