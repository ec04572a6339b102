"""Input checks for MONAI transform pipelines (segmentation, classification, inference), run right after loading so a
bad case fails before any resampling."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence

import nibabel as nib
import numpy as np
import torch
from monai.transforms import LoadImaged, MapTransform

from custom.errors import DataError
from custom.transforms.volume_checks import (
    MIN_SPATIAL_VOXELS,
    check_affine,
    check_channel_count,
    check_label_values,
    check_nifti_header,
    check_same_geometry,
)

__all__ = ["CheckImageInputd", "CheckSegmentationInputd", "LoadImageCheckedd", "check_image_tensor"]


def _source(item: object, fallback: str) -> str:
    meta = getattr(item, "meta", {})
    name = meta.get("filename_or_obj", fallback) if isinstance(meta, Mapping) else fallback
    return str(name[0] if isinstance(name, (list, tuple)) else name)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def unreadable_reason(path: str) -> str | None:
    """Why ``path`` cannot be read as an image (no file, empty, a NIfTI that does not decode fully), or None."""
    if not os.path.isfile(path):
        return "no file"
    if os.path.getsize(path) == 0:
        return "an empty file (0 bytes)"
    if path.lower().endswith((".nii", ".nii.gz")):
        try:
            check_nifti_header(path)
            np.asanyarray(nib.load(path).dataobj)
        except Exception as err:  # noqa: BLE001 - nibabel, gzip and zlib raise many types for damaged files
            return _first_line(err)
    return None


class LoadImageCheckedd(LoadImaged):
    """MONAI's ``LoadImaged`` whose failures are one line: a file that does not load (truncated, empty, not an image,
    absent) raises :class:`custom.errors.DataError` naming the file and the reader's reason, instead of
    nibabel's ``EOFError`` / MONAI's reader error without the file name. Loading itself is unchanged (same readers,
    same ``MetaTensor``); the files are only re-examined after a failure, to name the one that failed.

    A NIfTI whose header affine (the sform when ``sform_code > 0``, as nibabel, the pre-training loader and the
    integrity checker read it) is singular is refused too: MONAI's reader silently falls back to the qform there, so
    the same file would be refused by one bundle and loaded with another geometry by the next.

    Before reading, a NIfTI header that implies more voxels than the cap (``T3D_MAX_VOXELS``) or more data than the
    file can hold is refused (:func:`custom.transforms.volume_checks.check_nifti_header`), so a tiny hostile file
    cannot allocate gigabytes."""

    def __call__(self, data: Mapping[Hashable, object], reader: object | None = None) -> dict:
        paths = [
            str(p)
            for key in self.keys
            if key in data
            for p in (data[key] if isinstance(data[key], (list, tuple)) else [data[key]])
        ]
        for path in paths:
            check_nifti_header(path)
        try:
            loaded = super().__call__(data, reader)
        except DataError:
            raise
        except Exception as err:  # noqa: BLE001 - whatever the reader raised, one line naming the file
            for path in paths:
                reason = unreadable_reason(path)
                if reason is not None:
                    break
            else:
                path, reason = ", ".join(paths) or "image", _first_line(err)
            raise DataError(f"{path}: expected a readable image file, found {reason}") from err
        for path in paths:
            if path.lower().endswith((".nii", ".nii.gz")):
                header_image = nib.load(path)  # lazy: the header only, no voxels read
                form = "sform" if header_image.header["sform_code"] > 0 else "qform"
                check_affine(header_image.affine, f"{path} (its header's {form})")
        return loaded


def check_image_tensor(image: torch.Tensor, source: str, in_channels: int | None = None) -> None:
    """A channel-first image ``(C, *spatial)``: ``C == in_channels`` (when given), three spatial axes of at least
    ``MIN_SPATIAL_VOXELS`` voxels, finite intensities (one NaN voxel makes every loss and weight NaN), and an
    invertible affine (when it is a MetaTensor)."""
    if in_channels is not None:
        check_channel_count(image.shape[0], in_channels, source)
    spatial = tuple(int(n) for n in image.shape[1:])
    if len(spatial) != 3 or min(spatial) < MIN_SPATIAL_VOXELS:
        raise DataError(
            f"{source}: expected a 3D volume with at least {MIN_SPATIAL_VOXELS} voxels along every axis, "
            f"found spatial shape {spatial}"
        )
    values = torch.as_tensor(image)
    if torch.is_complex(values):
        raise DataError(f"{source}: expected real-valued voxels (integer or float), found dtype {values.dtype}")
    if torch.is_floating_point(values):
        bad = int((~torch.isfinite(values)).sum())
        if bad:
            raise DataError(f"{source}: expected finite intensities, found {bad} NaN/inf voxels")
    affine = getattr(image, "affine", None)
    if affine is not None:
        check_affine(affine.detach().cpu().numpy(), source)


class CheckImageInputd(MapTransform):
    """:func:`check_image_tensor` on ``image`` right after loading (classification and inference pipelines)."""

    def __init__(self, image_key: str = "image", in_channels: int | None = None) -> None:
        super().__init__([image_key])
        self.image_key, self.in_channels = image_key, in_channels

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        check_image_tensor(d[self.image_key], _source(d[self.image_key], self.image_key), self.in_channels)
        return d


class CheckSegmentationInputd(MapTransform):
    """Raise :class:`custom.errors.DataError` (one line) for inputs the network cannot be trained or run on.

    Expects channel-first MetaTensors: ``image`` ``(C, *spatial)`` and, when present, ``label`` ``(1, *spatial)``.
    Checks that ``C == in_channels``, that every intensity is finite (a NaN voxel would make every loss and weight
    NaN), that the affine is invertible, that the label shares the image's spatial shape and affine, and that every
    label value is one of ``label_values`` (the classes of ``channel_def``; ``None`` leaves values to a later
    transform).
    """

    def __init__(
        self,
        image_key: str = "image",
        label_key: str = "label",
        in_channels: int | None = None,
        label_values: Sequence[int] | None = None,
        allow_missing_keys: bool = True,
    ) -> None:
        super().__init__([image_key, label_key], allow_missing_keys=allow_missing_keys)
        self.image_key, self.label_key = image_key, label_key
        self.in_channels = in_channels
        self.label_values = None if label_values is None else [int(v) for v in label_values]

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        image = d[self.image_key]
        image_source = _source(image, self.image_key)
        check_image_tensor(image, image_source, self.in_channels)
        label = d.get(self.label_key)
        if label is None:
            return d
        label_source = _source(label, self.label_key)
        source = f"{label_source} vs {image_source}"
        check_same_geometry(tuple(image.shape[1:]), image.affine, tuple(label.shape[1:]), label.affine, source)
        if self.label_values is not None:
            check_label_values(torch.unique(torch.as_tensor(label)).cpu().numpy(), self.label_values, label_source)
        return d
