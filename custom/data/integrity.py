"""Dataset integrity check for any datalist of this project, in the spirit of nnU-Net's ``--verify_dataset_integrity``.

    python -m custom.data.integrity --datalist data/bimcv_vlp/pairs_datalist.json
    python -m custom.data.integrity --datalist data/btcv/dataset_0.json --kind segmentation --num_classes 14

A datalist is a JSON object whose list values are splits (``training``, ``validation``, ``test``, ...) of rows; a
row is a dict (``image``, and ``label`` / ``report`` / ``label_vector`` / ``patient_id`` as the kind needs) or, as in
the Decathlon ``test`` list, a bare image path. Paths are relative to the datalist's folder (or ``--base_dir``).

Checks, each problem reported as one line ``<datalist> [<split> #<row>] <file or key>: expected ..., found ...``
(:func:`custom.data.datalist.row_location`):

- every image (and label) file exists and loads fully; images are 3D (4D with channels last is accepted for
  multi-modal Decathlon images; a pairs or classification row names one single-channel volume, not a list) with
  finite values, an invertible affine and voxel spacing within ``[min_spacing, max_spacing]`` mm;
- segmentation: the label is 3D, has the image's spatial shape and affine, holds integer values within the declared
  classes (``--num_classes`` N means 0..N-1, else the datalist's ``labels`` dict as in ``dataset.json``, else its
  ``channel_def``);
- pairs: the report is non-empty UTF-8 text (inline, or a ``.txt`` file path);
- pairs and classification: ``label_vector`` / ``label`` has one 0/1 entry per class of ``finding_names`` /
  ``class_names``;
- no patient (``patient_id`` or an alias such as ``PatientID``, else the image's file name:
  :func:`custom.data.datalist.patient_id_of`; compared ignoring case and whitespace) and no image file in two splits;
  no study (image file) twice within one split;
- with ``--in_channels N``: every image has N channels (one file per channel, or a 4D file's last axis);
- no file is read whose header implies more voxels than ``--max_voxels`` (default ``T3D_MAX_VOXELS`` or 2^30) or
  more data than the file can hold.

A malformed row (not an object, no ``image``) is a problem line; it never makes the checker skip its split. Every
row is checked on its own: a file that cannot be read (even with a ``MemoryError``) is one line, and the rest of the
datalist is still checked; the checker never ends on a traceback.

Exit status 1 when any problem is found, else 0 (the last line then says ``OK``).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Sequence

import nibabel as nib
import numpy as np

from custom.data.checks import duplicate_study_problems, patient_split_problems, read_report
from custom.data.datalist import dataset_base, patient_id_of, read_datalist, resolve_paths, row_location
from custom.errors import DataError
from custom.transforms.volume_checks import check_label_values, check_same_geometry, load_nifti_checked

__all__ = ["KINDS", "detect_kind", "declared_label_values", "verify_datalist", "main"]

KINDS = ("auto", "pairs", "segmentation", "classification", "images")


_IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".mha", ".nrrd")


_SPLIT_NAMES = ("training", "validation", "test")


def _is_row(value: object) -> bool:
    return isinstance(value, dict) or (isinstance(value, str) and value.endswith(_IMAGE_EXTENSIONS))


def _splits(datalist: dict) -> dict[str, list]:
    """The datalist's splits: ``training`` / ``validation`` / ``test`` and every other non-empty top-level list
    holding a row dict or image path (not ``finding_names``). A split may hold malformed rows: they are reported,
    never a reason to skip the split."""
    return {
        k: v
        for k, v in datalist.items()
        if isinstance(v, list) and v and (k in _SPLIT_NAMES or any(_is_row(r) for r in v))
    }


def detect_kind(rows: Sequence[dict | str]) -> str:
    """``pairs`` (rows with a report), ``segmentation`` (label is a path), ``classification`` (label is a vector or
    number) or ``images``."""
    dict_rows = [r for r in rows if isinstance(r, dict)]
    if any("report" in r for r in dict_rows):
        return "pairs"
    labels = [r["label"] for r in dict_rows if "label" in r]
    if labels and all(isinstance(v, str) for v in labels):
        return "segmentation"
    if labels:
        return "classification"
    return "images"


def declared_label_values(datalist: dict, num_classes: int | None) -> list[int] | None:
    """Allowed label values: ``0..num_classes-1``, else the keys of ``labels`` / ``channel_def``, else ``None``."""
    if num_classes is not None:
        return list(range(int(num_classes)))
    for key in ("labels", "channel_def"):
        declared = datalist.get(key)
        if isinstance(declared, dict) and declared:
            try:
                return sorted(int(k) for k in declared)
            except ValueError:
                found = sorted(declared)
                raise DataError(f"datalist '{key}': expected integer class ids as keys, found {found}") from None
    return None


def _check_spacing(affine: np.ndarray, source: str, min_spacing: float, max_spacing: float) -> None:
    spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    if np.any(spacing < min_spacing) or np.any(spacing > max_spacing):
        raise DataError(
            f"{source}: expected voxel spacing within [{min_spacing}, {max_spacing}] mm, found "
            f"{np.round(spacing, 4).tolist()}"
        )


def _load_image(
    path: str, min_spacing: float, max_spacing: float, allow_4d: bool, max_voxels: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load and check an image: 3D, or with ``allow_4d`` (segmentation: MSD stores modalities as a 4th axis) 4D with
    channels last. Pairs and classification volumes are single-channel CT: a 4D file there is a problem. Anything
    that goes wrong while reading (a ``MemoryError`` included) is a one-line :class:`DataError` naming the file."""
    try:
        ndim = len(nib.load(path).shape)
    except Exception:  # unreadable headers are reported by load_nifti_checked below with the right message
        ndim = 3
    try:
        array, affine = load_nifti_checked(
            path, expected_ndim=4 if ndim == 4 and allow_4d else 3, max_voxels=max_voxels
        )
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - one file's failure is its problem line; the checker goes on
        raise DataError(f"{path}: expected a readable volume, found {_first_line(err)}") from None
    _check_spacing(affine, path, min_spacing, max_spacing)
    return array, affine


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _channels(images: object, loaded: tuple | None) -> int:
    """The channel count of a row: one file per channel (a list), or a 4D file's last axis, else 1."""
    if isinstance(images, list) and len(images) > 1:
        return len(images)
    return int(loaded[0].shape[3]) if loaded is not None and loaded[0].ndim == 4 else 1


def _check_vector(vector: object, classes: list | None, source: str) -> None:
    if not isinstance(vector, list):
        raise DataError(f"{source}: expected a list of 0/1 per class, found {type(vector).__name__}")
    if classes is not None and len(vector) != len(classes):
        raise DataError(f"{source}: expected {len(classes)} entries (one per class), found {len(vector)}")
    if any(v not in (0, 1) for v in vector):
        raise DataError(f"{source}: expected only 0/1 entries, found {sorted({v for v in vector if v not in (0, 1)})}")


def _check_row(
    row: dict,
    kind: str,
    base_dir: str,
    classes: list | None,
    label_values: list[int] | None,
    min_spacing: float,
    max_spacing: float,
    in_channels: int | None = None,
    max_voxels: int | None = None,
) -> list[str]:
    """Problems of one row (messages without the row prefix)."""
    problems = []
    images = row.get("image")
    image_paths = images if isinstance(images, list) else [images]
    loaded = None
    if kind in ("pairs", "classification") and isinstance(images, list) and len(images) != 1:
        # single-channel CT: a list is a multi-channel row (the bundles' networks take 1 channel)
        problems.append(
            f"image: expected one file path (a single-channel volume), found a list of {len(images)}: {images[:2]}"
        )
        image_paths = []
    for image in image_paths:
        if not isinstance(image, str) or not image:
            problems.append(f"image: expected a file path, found {image!r}")
            continue
        try:
            loaded = _load_image(
                resolve_paths(image, base_dir), min_spacing, max_spacing, kind == "segmentation", max_voxels
            )
        except DataError as err:
            problems.append(str(err))
    channels = _channels(images, loaded)
    if in_channels is not None and image_paths and channels != int(in_channels):
        problems.append(
            f"{image_paths[0]}: expected {in_channels} image channel(s) (--in_channels), found {channels}"
            + (" (a 4D file's last axis)" if not isinstance(images, list) else " (one file per channel)")
        )
    if kind == "segmentation" and isinstance(row.get("label"), str):
        label_path = resolve_paths(row["label"], base_dir)
        try:
            label, label_affine = load_nifti_checked(label_path, max_voxels=max_voxels)
            if loaded is not None:
                check_same_geometry(loaded[0].shape[:3], loaded[1], label.shape, label_affine, f"{label_path} vs image")
            if not np.all(np.equal(np.mod(label, 1), 0)):
                raise DataError(f"{label_path}: expected integer label values, found fractional values")
            if label_values is not None:
                check_label_values(np.unique(label), label_values, label_path)
            elif label.min() < 0:
                raise DataError(f"{label_path}: expected non-negative label values, found {label.min()}")
        except DataError as err:
            problems.append(str(err))
    if kind == "pairs":
        report = row.get("report")
        try:
            read_report(report, base_dir, "report")
        except DataError as err:
            problems.append(str(err))
    vector_key = "label_vector" if "label_vector" in row else "label" if kind == "classification" else None
    if vector_key:
        try:
            _check_vector(row[vector_key], classes, vector_key)
        except DataError as err:
            problems.append(str(err))
    return problems


def verify_datalist(
    datalist_path: str,
    kind: str = "auto",
    num_classes: int | None = None,
    base_dir: str | None = None,
    patient_key: str = "patient_id",
    min_spacing: float = 0.05,
    max_spacing: float = 50.0,
    in_channels: int | None = None,
    max_voxels: int | None = None,
) -> list[str]:
    """Every problem of the datalist, one line each (empty when it is clean): each row is checked on its own, so a
    bad file (even one that exhausts memory) is one problem line and the rest is still checked."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, found {kind!r}")
    try:
        datalist = read_datalist(datalist_path, "--datalist")
    except (OSError, DataError) as err:
        return [str(err)]
    base_dir = dataset_base(datalist_path, base_dir)
    splits = _splits(datalist)
    if not splits:
        return [
            f"{datalist_path}: expected at least one non-empty list of rows (e.g. 'training'), "
            f"found keys {sorted(datalist)}"
        ]
    all_rows = [row for rows in splits.values() for row in rows]
    kind = detect_kind(all_rows) if kind == "auto" else kind
    classes = datalist.get("finding_names") or datalist.get("class_names")
    try:
        label_values = declared_label_values(datalist, num_classes)
    except DataError as err:
        return [f"{datalist_path}: {err}"]
    problems = []
    splits_of_image: dict[str, set] = defaultdict(set)
    well_formed: dict[str, list[dict]] = {}
    for split, rows in splits.items():
        well_formed[split] = []
        for index, row in enumerate(rows):
            row = {"image": row} if isinstance(row, str) else row
            where = row_location(datalist_path, split, index)
            if not isinstance(row, dict) or not row.get("image"):
                found = f"keys {sorted(row)}" if isinstance(row, dict) else repr(row)[:80]
                problems.append(f"{where}: expected a row with an 'image' (an object, or an image path), found {found}")
                continue
            try:
                row_problems = _check_row(
                    row, kind, base_dir, classes, label_values, min_spacing, max_spacing, in_channels, max_voxels
                )
            except Exception as err:  # noqa: BLE001 - never a traceback: the row's problem, and on to the next
                row_problems = [f"image {row.get('image')!r}: expected a checkable row, found {_first_line(err)}"]
            problems.extend(f"{where} {problem}" for problem in row_problems)
            well_formed[split].append({**row, "image": resolve_paths(row["image"], base_dir)})
            for image in row["image"] if isinstance(row["image"], list) else [row["image"]]:
                if isinstance(image, str):
                    splits_of_image[resolve_paths(image, base_dir)].add(split)
    patients = {
        split: [{patient_key: patient_id_of(r, patient_key)} for r in rows] for split, rows in well_formed.items()
    }
    problems.extend(patient_split_problems(patients, patient_key))
    problems.extend(f"{datalist_path}: {problem}" for problem in duplicate_study_problems(well_formed))
    for image, found in sorted(splits_of_image.items()):
        if len(found) > 1:
            problems.append(f"{image}: expected in one split, found in {sorted(found)}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m custom.data.integrity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--datalist", required=True, help="the JSON datalist to verify")
    parser.add_argument("--kind", default="auto", choices=KINDS, help="row kind (default: detected from the rows)")
    parser.add_argument("--num_classes", type=int, default=None, help="segmentation classes 0..N-1")
    parser.add_argument("--base_dir", default=None, help="where relative paths start (default: the datalist's folder)")
    parser.add_argument("--patient_key", default="patient_id")
    parser.add_argument("--min_spacing", type=float, default=0.05, help="smallest sane voxel spacing, mm")
    parser.add_argument("--max_spacing", type=float, default=50.0, help="largest sane voxel spacing, mm")
    parser.add_argument(
        "--in_channels", type=int, default=None, help="image channels the bundle's network takes (4 for BraTS)"
    )
    parser.add_argument(
        "--max_voxels", type=int, default=None, help="largest volume read, in voxels (default: T3D_MAX_VOXELS or 2^30)"
    )
    args = parser.parse_args(argv)
    try:
        problems = verify_datalist(
            args.datalist,
            args.kind,
            args.num_classes,
            args.base_dir,
            args.patient_key,
            args.min_spacing,
            args.max_spacing,
            args.in_channels,
            args.max_voxels,
        )
    except Exception as err:  # noqa: BLE001 - whatever escapes the per-row checks is a problem line, not a traceback
        problems = [f"{args.datalist}: expected a checkable datalist, found {_first_line(err)}"]
    for problem in problems:
        print(problem)
    if problems:
        # stdout is block-buffered when redirected: flushed first, so the summary on stderr is the last line of both
        sys.stdout.flush()
        print(f"{args.datalist}: {len(problems)} problem(s)", file=sys.stderr, flush=True)
        return 1
    print(f"{args.datalist}: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
