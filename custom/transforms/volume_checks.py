"""One-line checks of an image volume, its NIfTI header and its label map, shared by the MONAI pipeline checks
(:mod:`custom.transforms.seg_checks`), the datasets and the integrity checker (:mod:`custom.data`).

They sit with the transforms, below the data package, because a loading transform runs them on every case; each
raises :class:`~custom.errors.DataError` naming the file, what was expected and what was found.
"""

from __future__ import annotations

import gzip
import os
import zlib

import nibabel as nib
import numpy as np

from custom.errors import DataError

__all__ = [
    "MIN_SPATIAL_VOXELS",
    "DEFAULT_MAX_VOXELS",
    "max_voxels_allowed",
    "check_nifti_header",
    "load_nifti_checked",
    "check_affine",
    "check_volume_array",
    "check_same_geometry",
    "check_label_values",
    "check_channel_count",
]


#: fewer voxels than this along any axis is not a 3D volume a 3D network can learn from or be run on (a 32x32x2
#: "volume" is two slices); every loader refuses it with one line
MIN_SPATIAL_VOXELS = 8


#: the most voxels any loader decodes (a 512 x 512 x 2000 CT is 5.2e8); the environment variable ``T3D_MAX_VOXELS``
#: (or a loader's ``max_voxels`` argument, the integrity checker's ``--max_voxels``) sets another cap
DEFAULT_MAX_VOXELS = 2**30
#: deflate never packs more than ~1032 bytes into one: a .nii.gz cannot hold more voxel data than this times its size
_DEFLATE_MAX_RATIO = 1032


def max_voxels_allowed(max_voxels: int | None = None) -> int:
    """``max_voxels`` if given, else ``T3D_MAX_VOXELS`` from the environment, else :data:`DEFAULT_MAX_VOXELS`."""
    if max_voxels is not None:
        return int(max_voxels)
    configured = os.environ.get("T3D_MAX_VOXELS", "").strip()
    if not configured:
        return DEFAULT_MAX_VOXELS
    try:
        return int(float(configured))
    except ValueError:
        raise DataError(f"T3D_MAX_VOXELS: expected a number of voxels, found {configured!r}") from None


def check_nifti_header(path: str, max_voxels: int | None = None) -> None:
    """Refuse, from the header alone and before any voxel is decoded, a NIfTI whose voxels are not real numbers
    (complex, RGB), or whose header implies more voxels than the cap (:func:`max_voxels_allowed`) or more data than
    the file can hold (its size; a ``.nii.gz``: its size times deflate's largest ratio). A 1.4 KB file whose header
    claims 2000^3 voxels would otherwise allocate gigabytes. Other formats and unreadable headers pass (the reader
    reports those)."""
    if not path.lower().endswith((".nii", ".nii.gz")) or not os.path.isfile(path):
        return
    try:
        image = nib.load(path)  # lazy: the header only
        shape = tuple(int(n) for n in image.header.get_data_shape())
        dtype = np.dtype(image.header.get_data_dtype())
        itemsize = int(dtype.itemsize)
        offset = int(getattr(image.dataobj, "offset", 0))  # the image's header copy says 0; the proxy knows
    except Exception:  # noqa: BLE001 - an unreadable header is the reader's to report, with its reason
        return
    if dtype.kind not in "biuf":  # complex, RGB (structured) voxels: no intensity a network or a label map can use
        raise DataError(f"{path}: expected real-valued voxels (integer or float), found dtype {dtype}; not read")
    voxels = int(np.prod(shape, dtype=np.float64)) if shape else 0
    cap = max_voxels_allowed(max_voxels)
    if voxels > cap:
        raise DataError(
            f"{path}: expected at most {cap} voxels (T3D_MAX_VOXELS), found a header claiming shape {shape} "
            f"({voxels} voxels); not read"
        )
    implied, size = offset + voxels * itemsize, os.path.getsize(path)
    compressed = path.lower().endswith(".gz")
    holds = size * _DEFLATE_MAX_RATIO if compressed else size
    if implied > holds:
        can = f"at most {holds} bytes unpacked from its {size}" if compressed else f"{size}"
        raise DataError(
            f"{path}: expected {implied} bytes of NIfTI data for the header's shape {shape}, found a file that can "
            f"hold {can} bytes (a truncated file, or a header claiming more than the file holds); not read"
        )


def check_volume_array(
    array: np.ndarray,
    source: str,
    expected_ndim: int = 3,
    allow_nan: bool = False,
    min_voxels: int = MIN_SPATIAL_VOXELS,
) -> np.ndarray:
    """Check the dimensionality, the size (``min_voxels`` along every axis of a 3D volume) and finiteness of a loaded
    volume; returns it unchanged."""
    if array.ndim != expected_ndim:
        raise DataError(f"{source}: expected a {expected_ndim}D volume, found shape {tuple(array.shape)}")
    if min(array.shape) < 1:
        raise DataError(f"{source}: expected a non-empty volume, found shape {tuple(array.shape)}")
    if expected_ndim == 3 and min(array.shape) < min_voxels:
        raise DataError(
            f"{source}: expected at least {min_voxels} voxels along every axis of a 3D volume, "
            f"found shape {tuple(array.shape)}"
        )
    if array.dtype.kind not in "biuf":
        raise DataError(f"{source}: expected real-valued voxels (integer or float), found dtype {array.dtype}")
    if not allow_nan and np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise DataError(f"{source}: expected finite intensities, found {bad} NaN/inf voxels")
    return array


def load_nifti_checked(
    path: str, expected_ndim: int = 3, min_voxels: int = MIN_SPATIAL_VOXELS, max_voxels: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load a NIfTI fully (so truncation is caught now, not mid-training) after :func:`check_nifti_header`, and check
    it (:func:`check_volume_array`); returns (array, affine)."""
    check_nifti_header(path, max_voxels)
    try:
        image = nib.load(path)
        array = np.asanyarray(image.dataobj)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (nib.filebasedimages.ImageFileError, EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as err:
        raise DataError(f"{path}: expected a readable NIfTI, found a corrupt or truncated file ({err})") from None
    affine = check_affine(image.affine, path)
    return check_volume_array(array, path, expected_ndim, min_voxels=min_voxels), affine


def check_affine(affine: object, source: str) -> np.ndarray:
    """A finite voxel-to-world matrix whose 3x3 part is invertible; returns it as a float64 ``(4, 4)`` array."""
    affine = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-8:
        raise DataError(f"{source}: expected an invertible affine, found {affine[:3, :3].tolist()}")
    return affine


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
