"""Multi-label classification datalists: the curation's ``classification_datalist*.json`` and any pairs datalist.

Accepted files (MONAI JSON):

- ``classification_datalist.json`` / ``classification_datalist_frac{1,10,100}.json`` written by
  ``python -m t3d_tools.curation.bimcv curate``: ``{"training", "validation", "test": [row], "class_names": [...]}``,
  row ``{"image", "label": multi-hot, "label_vector", "labels", "patient_id", "study_id"}``;
- a pairs datalist (``pairs_datalist.json`` of the curation or of ``custom.data.make_synthetic_pairs``):
  ``"finding_names"`` instead of ``"class_names"``, the multi-hot vector in ``"label_vector"``.

The class list is read from the file (``class_names``, else ``finding_names``), never assumed. Every row is checked
when loaded: its image exists and its label vector has one 0/1 entry per class; a wrong row stops with one line
naming the file, the row and the key, what was expected and what was found. An empty split stops the same way.

Label fractions: ``label_fraction < 1`` keeps the nested, patient-level, seeded subset of the training rows that
:func:`custom.data.label_fractions.label_fraction_subsets` gives with ``stratify_key="label_vector"``, the same rule
(and, for the same seed, the same patients) as the curation's ``_frac*.json`` files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from custom.data.datalist import read_datalist, read_split, row_location
from custom.data.label_fractions import label_fraction_subsets
from custom.errors import DataError

__all__ = ["LABEL_KEYS", "read_class_names", "load_classification_split", "write_class_names"]

#: where a row's multi-hot vector may be, in order of preference
LABEL_KEYS: tuple[str, ...] = ("label", "label_vector")
CLASS_KEYS: tuple[str, ...] = ("class_names", "finding_names")


def read_class_names(datalist: str) -> list[str]:
    """The class list of ``datalist`` (its ``class_names``, else ``finding_names``)."""
    content = read_datalist(datalist)
    for key in CLASS_KEYS:
        names = content.get(key)
        if names:
            if not all(isinstance(n, str) and n.strip() for n in names) or len(set(names)) != len(names):
                raise DataError(f"{datalist}: expected '{key}' to hold distinct non-empty class names, found {names}")
            return list(names)
    raise DataError(
        f"{datalist}: expected a non-empty 'class_names' or 'finding_names' list, found keys {sorted(content)}"
    )


def _label_vector(row: dict, where: str, count: int) -> list[float]:
    key = next((k for k in LABEL_KEYS if k in row and not isinstance(row[k], str)), None)
    if key is None:
        raise DataError(
            f"{where}: expected a multi-hot '{LABEL_KEYS[0]}' or '{LABEL_KEYS[1]}' list, found keys {sorted(row)}"
        )
    vector = row[key]
    if not isinstance(vector, (list, tuple)) or len(vector) != count:
        found = f"length {len(vector)}" if isinstance(vector, (list, tuple)) else type(vector).__name__
        raise DataError(
            f"{where} key '{key}': expected a label vector of length {count} (one per class), found {found}"
        )
    if any(v not in (0, 1, True, False) for v in vector):
        raise DataError(f"{where} key '{key}': expected 0/1 entries, found {sorted({str(v) for v in vector})}")
    return [float(v) for v in vector]


def load_classification_split(
    datalist: str,
    split: str = "training",
    dataset_dir: str | None = None,
    label_fraction: float = 1.0,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> list[dict]:
    """Rows ``{"image": absolute path (a list of paths, one per channel, when the row lists several), "label":
    [float] * C, "patient_id", "study_id"}`` of ``split`` (only these
    keys: other row fields, e.g. free-text term lists of varying length, would not collate into batches).

    ``class_names`` (e.g. from the bundle config) must equal the file's list when given: a model trained on one class
    list never silently scores another. Relative image paths resolve against ``dataset_dir`` (default: the
    datalist's folder).
    """
    names = read_class_names(datalist)
    if class_names is not None and list(class_names) != names:
        raise DataError(
            f"{datalist}: expected the class list {list(class_names)} (config key class_names), found {names}"
        )
    rows = []
    for index, row in enumerate(read_split(datalist, split, dataset_dir)):
        vector = _label_vector(row, row_location(datalist, split, index), len(names))
        image = row["image"]  # a list: one file per channel; the channel count is checked after loading
        rows.append(
            {
                "image": image,
                "label": vector,
                "patient_id": row["patient_id"],
                "study_id": str(row.get("study_id", image)),
            }
        )
    if label_fraction < 1.0:  # "label" holds the same multi-hot vector the curation stratifies its files by
        rows = label_fraction_subsets(rows, (label_fraction,), seed, stratify_key="label")[label_fraction]
    return rows


def write_class_names(path: str, class_names: Sequence[str]) -> str:
    """Write ``{"class_names": [...]}`` (what a trained model's outputs mean; :func:`read_class_names` reads it)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"class_names": list(class_names)}, f, indent=1)
    return path
