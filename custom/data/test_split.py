"""A labelled, patient-disjoint ``test`` split for scoring a model whose checkpoint was chosen on ``validation``.

Public data sets rarely ship labelled test cases (BTCV's and MSD's test images have no labels), so a protocol that
selects on validation and reports on test must hold some labelled patients out itself. :func:`write_test_split`
writes a new datalist next to nothing it did not create: the source datalist is left as it is, and every other key
(class names, the published validation split) is copied unchanged.

Two sources for the held-out patients:

- ``test_source="training"``: the test split is a seeded ``held_out_fraction`` of the training patients; validation
  is unchanged (segmentation: the published split still selects the checkpoint);
- ``test_source="validation"``: the source's validation split becomes the test split and the new validation split
  is held out of training. Used when the validation studies are the only ones an upstream stage never saw (the
  pre-training pairs: pre-training trained on their training studies and their reports).

A source datalist whose ``test`` split is already labelled (every row has ``label`` or ``label_vector``, as the
BIMCV curation writes) keeps it as it is.

CLI: ``python -m custom.data.test_split --datalist D --out_path O [--held_out_fraction 0.2] [--seed 0]``
"""

from __future__ import annotations

import json
import math
import os

from custom.data.datalist import patient_group_of, read_datalist
from custom.data.seg_datasets.common import split_validation
from custom.errors import DataError

__all__ = ["LABEL_KEYS", "write_test_split"]

#: a row is labelled when it has one of these keys (segmentation label map; multi-hot classification vector)
LABEL_KEYS: tuple[str, ...] = ("label", "label_vector")


def _is_labelled(rows: list) -> bool:
    return bool(rows) and all(isinstance(r, dict) and any(k in r for k in LABEL_KEYS) for r in rows)


def _held_out_patients(rows: list[dict], fraction: float, seed: int, where: str) -> set[str]:
    """The seeded choice of :func:`~custom.data.seg_datasets.common.split_validation`, refused (rather than clamped)
    when it would leave training with one patient or none."""
    patients = {patient_group_of(r) for r in rows}
    count = max(1, math.ceil(fraction * len(patients)))
    if count >= len(patients):
        raise DataError(
            f"{where}: expected more than {count} training patients to hold {fraction:g} of them out, "
            f"found {len(patients)}"
        )
    return split_validation(sorted(patients), fraction, seed)


def write_test_split(
    datalist: str, out_path: str, held_out_fraction: float = 0.2, seed: int = 0, test_source: str = "training"
) -> str:
    """Write ``datalist`` with a labelled ``test`` split to ``out_path`` (atomically) and return ``out_path``.

    Relative image paths are kept as they are, so the bundle's ``dataset_dir`` still resolves them. The held-out
    patients are a seeded choice (``seed``), disjoint by ``patient_id`` from the remaining training rows.
    """
    if not 0 < held_out_fraction < 1:
        raise ValueError(f"held_out_fraction: expected a value in (0, 1), found {held_out_fraction}")
    if test_source not in ("training", "validation"):
        raise ValueError(f"test_source: expected 'training' or 'validation', found {test_source!r}")
    content = dict(read_datalist(datalist))
    for split in ("training", "validation"):
        if not content.get(split):
            raise DataError(f"{datalist}: expected a non-empty '{split}' split, found {len(content.get(split) or [])}")
    if not _is_labelled(content.get("test") or []):
        training = content["training"]
        held = _held_out_patients(training, held_out_fraction, seed, datalist)
        kept = [r for r in training if patient_group_of(r) not in held]
        held_rows = [r for r in training if patient_group_of(r) in held]
        if test_source == "training":
            content.update(training=kept, test=held_rows)
        else:
            content.update(training=kept, validation=held_rows, test=content["validation"])
        content["test_split"] = {
            "source": os.path.abspath(datalist),
            "test_source": test_source,
            "held_out_fraction": held_out_fraction,
            "seed": seed,
        }
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = f"{out_path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(content, f, indent=1)
    os.replace(tmp, out_path)
    return out_path


if __name__ == "__main__":
    import fire

    fire.Fire(write_test_split)
