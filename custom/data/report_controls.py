"""Control pre-trainings for the paper table (#27): the same T3D run with its reports replaced, so that the table can
show it is able to see an effect of text (positive control) and that T3D's gains need the *right* report (negative
control).

- :func:`with_oracle_reports`: each study's report becomes oracle text written from its ground-truth finding labels
  ("Findings: nodule, pleural effusion." / "No findings."): T3D then is supervised contrastive learning with the labels
  as text, the most a report could tell.
- :func:`with_shuffled_reports`: the reports are permuted across studies (no study keeps its own): the text is as
  varied and as well-formed as before, but says nothing about the image it comes with.

Both take and return pair rows (``custom.data.pairs.load_pairs``); the ``control_*.json`` overlays of
``t3d_pretrain`` wrap its ``train#rows`` with them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from custom.data.checks import DataError
from custom.data.datalist import read_datalist

__all__ = ["oracle_text", "with_oracle_reports", "with_shuffled_reports"]

NAME_KEYS = ("class_names", "finding_names")


def oracle_text(findings: Sequence[str]) -> str:
    """The oracle report of a study with ``findings`` (names, in the label list's order)."""
    return f"Findings: {', '.join(findings)}." if findings else "No findings."


def _findings_by_study(labels_datalist: str, split: str) -> dict[str, list[str]]:
    """``{study id (else image): finding names}`` of ``split`` in ``labels_datalist`` (rows with ``labels``, or a
    multi-hot ``label_vector`` / ``label`` over the file's ``class_names`` / ``finding_names``)."""
    content = read_datalist(labels_datalist)
    names = next((content[k] for k in NAME_KEYS if content.get(k)), None)
    found = {}
    for index, row in enumerate(content.get(split) or []):
        key = row.get("study_id") or row["image"]
        if isinstance(row.get("labels"), list):
            found[key] = list(row["labels"])
        elif names is not None and isinstance(row.get("label_vector", row.get("label")), list):
            vector = row.get("label_vector", row.get("label"))
            found[key] = [n for n, v in zip(names, vector) if v]
        else:
            raise DataError(
                f"{labels_datalist} '{split}' row {index}: expected 'labels' (finding names) or a multi-hot "
                f"'label_vector' with {NAME_KEYS[0]!r} / {NAME_KEYS[1]!r} in the file, found keys {sorted(row)}"
            )
    return found


def with_oracle_reports(rows: Sequence[dict], labels_datalist: str, split: str = "training") -> list[dict]:
    """``rows`` with each ``report`` replaced by :func:`oracle_text` of the study's labels in ``labels_datalist``
    (matched by ``study_id``, else by ``image``). A row without labels there stops with one line."""
    truth = _findings_by_study(labels_datalist, split)
    out = []
    for row in rows:
        key = row.get("study_id") or row["image"]
        if key not in truth:
            raise DataError(
                f"{labels_datalist}: expected labels for every '{split}' study of the pre-training, found none for "
                f"{key!r} ({len(truth)} labelled studies)"
            )
        out.append({**row, "report": oracle_text(truth[key])})
    return out


def with_shuffled_reports(rows: Sequence[dict], seed: int = 0) -> list[dict]:
    """``rows`` with their reports permuted across studies, seeded, so that no study keeps its own report (a random
    order, each row taking the next row's report in it). Needs two rows or more."""
    if len(rows) < 2:
        raise DataError(f"with_shuffled_reports: expected at least 2 rows to shuffle reports across, found {len(rows)}")
    order = np.random.default_rng(seed).permutation(len(rows))
    reports = [None] * len(rows)
    for position, index in enumerate(order):
        reports[index] = rows[order[(position + 1) % len(rows)]]["report"]
    return [{**row, "report": report} for row, report in zip(rows, reports)]
