"""One-line input checks shared by every loader, the datalist readers and the integrity checker.

Each check raises :class:`DataError` whose message names the file (or datalist row / config key), what was expected
and what was found, so a bad case among thousands is found from the log line alone.
"""

from __future__ import annotations

import gzip
import zlib

import nibabel as nib
import numpy as np

__all__ = [
    "DataError",
    "load_nifti_checked",
    "check_volume_array",
    "check_report_text",
    "read_text_file",
    "check_same_geometry",
    "check_label_values",
    "check_channel_count",
]


class DataError(ValueError):
    """A problem with input data; the message is one line naming the source, the expectation and the finding."""


def check_volume_array(array: np.ndarray, source: str, expected_ndim: int = 3, allow_nan: bool = False) -> np.ndarray:
    """Check the dimensionality and finiteness of a loaded volume; returns it unchanged."""
    if array.ndim != expected_ndim:
        raise DataError(f"{source}: expected a {expected_ndim}D volume, found shape {tuple(array.shape)}")
    if min(array.shape) < 1:
        raise DataError(f"{source}: expected a non-empty volume, found shape {tuple(array.shape)}")
    if not allow_nan and np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise DataError(f"{source}: expected finite intensities, found {bad} NaN/inf voxels")
    return array


def load_nifti_checked(path: str, expected_ndim: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Load a NIfTI fully (so truncation is caught now, not mid-training) and check it; returns (array, affine)."""
    try:
        image = nib.load(path)
        array = np.asanyarray(image.dataobj)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (nib.filebasedimages.ImageFileError, EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as err:
        raise DataError(f"{path}: expected a readable NIfTI, found a corrupt or truncated file ({err})") from None
    affine = np.asarray(image.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-8:
        raise DataError(f"{path}: expected an invertible affine, found {affine[:3, :3].tolist()}")
    return check_volume_array(array, path, expected_ndim), affine


def check_report_text(report: object, source: str) -> str:
    """A report must be a non-empty string (after stripping whitespace); returns it stripped."""
    if isinstance(report, bytes):
        try:
            report = report.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{source}: expected UTF-8 report text, found undecodable bytes ({err.reason})") from None
    if not isinstance(report, str):
        raise DataError(f"{source}: expected report text, found {type(report).__name__}")
    if not report.strip():
        raise DataError(f"{source}: expected a non-empty report, found {'whitespace only' if report else 'nothing'}")
    return report.strip()


def read_text_file(path: str) -> str:
    """Read a report/text file strictly as UTF-8, naming the file and byte offset on failure."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: expected UTF-8 text, found an invalid byte at offset {err.start}") from None


def check_same_geometry(
    image_shape: tuple[int, ...],
    image_affine: np.ndarray,
    label_shape: tuple[int, ...],
    label_affine: np.ndarray,
    source: str,
    atol: float = 1e-3,
) -> None:
    """An image and its label map must share the spatial grid: same spatial shape and (to ``atol`` mm) same affine."""
    if tuple(image_shape) != tuple(label_shape):
        raise DataError(
            f"{source}: expected the label's spatial shape to equal the image's {tuple(image_shape)}, "
            f"found {tuple(label_shape)}"
        )
    image_affine, label_affine = np.asarray(image_affine, dtype=np.float64), np.asarray(label_affine, dtype=np.float64)
    if not np.allclose(image_affine, label_affine, atol=atol):
        worst = float(np.abs(image_affine - label_affine).max())
        raise DataError(
            f"{source}: expected the label's affine to equal the image's, found a difference of {worst:.4g} "
            f"(image {np.round(image_affine[:3], 3).tolist()}, label {np.round(label_affine[:3], 3).tolist()})"
        )


def check_label_values(values: np.ndarray, allowed: set[int] | list[int], source: str) -> None:
    """Every value of a label map must be one of ``allowed`` (the classes of the bundle's ``channel_def``)."""
    found = {float(v) for v in np.unique(np.asarray(values))}
    unknown = sorted(v for v in found if v not in {float(a) for a in allowed})
    if unknown:
        shown = [int(v) if float(v).is_integer() else v for v in unknown[:10]]
        raise DataError(f"{source}: expected label values in {sorted(int(a) for a in allowed)}, found {shown}")


def check_channel_count(channels: int, expected: int, source: str) -> None:
    """The number of image channels must match the network's ``in_channels``."""
    if int(channels) != int(expected):
        raise DataError(f"{source}: expected {expected} image channel(s) for the network, found {channels}")
