"""Nested, patient-level, seeded label-fraction subsets (1 % ⊂ 10 % ⊂ 100 %) of a training datalist.

Patients are shuffled once with the seed; every fraction takes a prefix of that order, so smaller subsets are
contained in larger ones and the same seed always gives the same files. With ``stratify_key`` (a per-row list or
multi-hot vector of labels), patients are ordered round-robin across their rarest label so that each prefix
covers as many classes as it can. Every fraction keeps at least ``min_patients`` patients. A row's patient is
:func:`custom.data.datalist.patient_group_of` (its ``patient_id``, else its image's file name; case and
whitespace ignored, as the leakage check ignores them).
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from custom.data.datalist import patient_group_of, read_datalist
from custom.errors import DataError

__all__ = ["patient_order", "label_fraction_subsets", "write_label_fraction_datalists"]


def _row_labels(row: dict, stratify_key: str) -> list:
    value = row.get(stratify_key, [])
    if value and all(isinstance(v, (int, float)) for v in value) and set(value) <= {0, 1}:
        return [i for i, v in enumerate(value) if v]  # multi-hot vector
    return list(value)


def patient_order(
    rows: Sequence[dict], seed: int, patient_key: str = "patient_id", stratify_key: str | None = None
) -> list:
    """Patients in the order fractions take them (deterministic for ``seed``)."""
    patients = sorted({patient_group_of(row, patient_key) for row in rows})
    rng = np.random.default_rng(seed)
    shuffled = [patients[i] for i in rng.permutation(len(patients))]
    if stratify_key is None:
        return shuffled
    labels_of: dict[str, set] = defaultdict(set)
    for row in rows:
        labels_of[patient_group_of(row, patient_key)].update(_row_labels(row, stratify_key))
    frequency: dict = defaultdict(int)
    for labels in labels_of.values():
        for label in labels:
            frequency[label] += 1
    buckets: dict = defaultdict(list)
    for patient in shuffled:  # bucket by the patient's rarest label; unlabelled patients form their own bucket
        labels = labels_of[patient]
        buckets[min(labels, key=lambda lab: (frequency[lab], str(lab))) if labels else None].append(patient)
    order, keys = [], sorted(buckets, key=lambda k: (len(buckets[k]), str(k)))
    while any(buckets[k] for k in keys):
        for key in keys:
            if buckets[key]:
                order.append(buckets[key].pop(0))
    return order


def label_fraction_subsets(
    rows: Sequence[dict],
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    seed: int = 0,
    patient_key: str = "patient_id",
    stratify_key: str | None = None,
    min_patients: int = 1,
) -> dict[float, list[dict]]:
    """``{fraction: rows}`` with nested patient sets; rows keep their original order."""
    for fraction in fractions:
        if not 0 < fraction <= 1:
            raise ValueError(f"fractions: expected values in (0, 1], found {fraction}")
    order = patient_order(rows, seed, patient_key, stratify_key)
    subsets = {}
    for fraction in fractions:
        count = min(len(order), max(min_patients, math.ceil(fraction * len(order))))
        chosen = set(order[:count])
        subsets[fraction] = [row for row in rows if patient_group_of(row, patient_key) in chosen]
    return subsets


def write_label_fraction_datalists(
    datalist_path: str,
    out_dir: str | None = None,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    seed: int = 0,
    patient_key: str = "patient_id",
    stratify_key: str | None = None,
    train_key: str = "training",
) -> dict[float, str]:
    """Write ``<stem>_frac<percent>.json`` next to the datalist (or in ``out_dir``), other keys copied unchanged."""
    datalist = read_datalist(datalist_path)
    if train_key not in datalist:
        raise DataError(f"{datalist_path}: expected a '{train_key}' list, found keys {sorted(datalist)}")
    out_dir = out_dir or os.path.dirname(os.path.abspath(datalist_path))
    stem = os.path.splitext(os.path.basename(datalist_path))[0]
    subsets = label_fraction_subsets(datalist[train_key], fractions, seed, patient_key, stratify_key)
    paths = {}
    for fraction, subset in subsets.items():
        path = os.path.join(out_dir, f"{stem}_frac{fraction * 100:g}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump({**datalist, train_key: subset, "label_fraction": fraction, "seed": seed}, f, indent=1)
        paths[fraction] = path
    return paths


if __name__ == "__main__":
    import fire

    fire.Fire(write_label_fraction_datalists)
