"""The one versioned preprocessing chain shared by pre-training, fine-tuning and inference.

Orient to RAS; resample only towards a *finer* target spacing (never coarser than the source unless asked); CT:
clip Hounsfield units to a window and scale to [0, 1]; MR: per-channel z-score on the foreground. Everything that
changes the output is in ``fingerprint()``, which keys the volume cache, so a changed chain never reads stale crops.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import NormalizeIntensity, Orientation, ScaleIntensityRange, Spacing

__all__ = ["PREPROCESSING_VERSION", "VolumePreprocessing"]

# 2: spacing read after reorienting to RAS (1 read it in the stored axis order, so permuted-axis volumes were
# resampled along the wrong axes)
PREPROCESSING_VERSION = "t3d-preprocessing-2"


class VolumePreprocessing:
    """``(array (X, Y, Z), affine (4, 4))`` -> ``(float32 array (X', Y', Z'), affine')``.

    Args:
        modality: ``"ct"`` or ``"mr"``.
        hu_window: CT window mapped to [0, 1] (values outside are clipped).
        target_spacing: mm per axis in RAS order (R, A, S, whatever the stored axis order), or None to keep the native
            grid. Axes already finer than the target are kept.
        allow_coarser: resample to ``target_spacing`` even where that is coarser than the source (off by default:
            T3D's point is native resolution).
    """

    def __init__(
        self,
        modality: str = "ct",
        hu_window: Sequence[float] = (-1000.0, 1000.0),
        target_spacing: Sequence[float] | None = None,
        allow_coarser: bool = False,
    ) -> None:
        if modality not in ("ct", "mr"):
            raise ValueError(f"modality: expected 'ct' or 'mr', found '{modality}'")
        self.modality = modality
        self.hu_window = tuple(float(v) for v in hu_window)
        self.target_spacing = None if target_spacing is None else tuple(float(v) for v in target_spacing)
        self.allow_coarser = allow_coarser
        if modality == "ct":
            self.intensity = ScaleIntensityRange(
                a_min=self.hu_window[0], a_max=self.hu_window[1], b_min=0.0, b_max=1.0, clip=True
            )
        else:
            self.intensity = NormalizeIntensity(nonzero=True, channel_wise=True)

    def fingerprint(self) -> str:
        return f"{PREPROCESSING_VERSION}|{self.modality}|{self.hu_window}|{self.target_spacing}|{self.allow_coarser}"

    def output_spacing(self, source_spacing: Sequence[float]) -> tuple[float, ...]:
        if self.target_spacing is None:
            return tuple(float(s) for s in source_spacing)
        if self.allow_coarser:
            return self.target_spacing
        return tuple(min(float(s), t) for s, t in zip(source_spacing, self.target_spacing))

    def __call__(self, array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image = MetaTensor(torch.as_tensor(np.asarray(array, dtype=np.float32))[None], affine=torch.as_tensor(affine))
        image = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(image)
        # spacing of the RAS-oriented grid (R, A, S), the order target_spacing is given in
        source_spacing = np.sqrt((np.asarray(image.affine, dtype=np.float64)[:3, :3] ** 2).sum(0))
        spacing = self.output_spacing(source_spacing)
        if not np.allclose(spacing, source_spacing, rtol=1e-3):
            image = Spacing(pixdim=spacing, mode="bilinear")(image)
        image = self.intensity(image)
        return image[0].numpy().astype(np.float32), image.affine.numpy()
