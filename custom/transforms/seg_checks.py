"""Input checks for segmentation pipelines, run right after loading so a bad case fails before any resampling."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.transforms import MapTransform

from custom.data.checks import check_channel_count, check_label_values, check_same_geometry

__all__ = ["CheckSegmentationInputd"]


def _source(item: object, fallback: str) -> str:
    meta = getattr(item, "meta", {})
    name = meta.get("filename_or_obj", fallback) if isinstance(meta, Mapping) else fallback
    return str(name[0] if isinstance(name, (list, tuple)) else name)


class CheckSegmentationInputd(MapTransform):
    """Raise :class:`custom.data.checks.DataError` (one line) for inputs the network cannot be trained or run on.

    Expects channel-first MetaTensors: ``image`` ``(C, *spatial)`` and, when present, ``label`` ``(1, *spatial)``.
    Checks that ``C == in_channels``, that the label shares the image's spatial shape and affine, and that every label
    value is one of ``label_values`` (the classes of ``channel_def``; ``None`` leaves values to a later transform).
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
        if self.in_channels is not None:
            check_channel_count(image.shape[0], self.in_channels, image_source)
        label = d.get(self.label_key)
        if label is None:
            return d
        label_source = _source(label, self.label_key)
        source = f"{label_source} vs {image_source}"
        check_same_geometry(tuple(image.shape[1:]), image.affine, tuple(label.shape[1:]), label.affine, source)
        if self.label_values is not None:
            check_label_values(torch.unique(torch.as_tensor(label)).cpu().numpy(), self.label_values, label_source)
        return d
