"""95th-percentile Hausdorff distance (HD95) per class, in pure torch.

MONAI's ``HausdorffDistanceMetric`` needs SciPy (edge extraction and distance transforms); this project does not
depend on SciPy, so the bundles' ``evaluate.json`` use this metric instead. Definition as MONAI's: surface voxels are
mask voxels with a background neighbour (26-neighbourhood); for each direction the 95th percentile of the distances
from one surface to the nearest voxel of the other; HD95 is the larger of the two. Empty reference -> NaN (ignored in
the mean), empty prediction with a non-empty reference -> inf. Distances are in voxels (MONAI's default).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

__all__ = ["surface_voxels", "hd95", "HausdorffDistance95Metric"]

_CHUNK = 2048  # surface points per distance block: bounds memory at _CHUNK x (other surface size) floats


def surface_voxels(mask: torch.Tensor) -> torch.Tensor:
    """Coordinates ``(N, 3)`` of the voxels of a boolean ``(X, Y, Z)`` mask that touch the background."""
    volume = mask[None, None].float()
    eroded = -F.max_pool3d(-F.pad(volume, (1, 1, 1, 1, 1, 1), value=0.0), kernel_size=3, stride=1)
    return torch.nonzero((volume > 0) & (eroded < 1))[:, 2:].float()


def _directed_percentile(source: torch.Tensor, target: torch.Tensor, q: float) -> torch.Tensor:
    nearest = torch.cat([torch.cdist(chunk, target).amin(dim=1) for chunk in source.split(_CHUNK)])
    return torch.quantile(nearest, q / 100.0)


def hd95(prediction: torch.Tensor, reference: torch.Tensor, percentile: float = 95.0) -> torch.Tensor:
    """HD95 between two boolean ``(X, Y, Z)`` masks (scalar tensor, voxel units; NaN / inf as in the module doc)."""
    if not reference.any():
        return torch.tensor(float("nan"))
    if not prediction.any():
        return torch.tensor(float("inf"))
    a, b = surface_voxels(prediction), surface_voxels(reference)
    return torch.maximum(_directed_percentile(a, b, percentile), _directed_percentile(b, a, percentile))


class HausdorffDistance95Metric(CumulativeIterationMetric):
    """Per-class HD95 of one-hot / binarised ``y_pred`` and ``y``, both ``(B, C, X, Y, Z)``; buffers ``(B, C)``."""

    def __init__(
        self,
        include_background: bool = False,
        percentile: float = 95.0,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__()
        self.include_background, self.percentile = include_background, percentile
        self.reduction, self.get_not_nans = reduction, get_not_nans

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        first = 0 if self.include_background else 1
        y_pred, y = y_pred.bool().cpu(), y.bool().cpu()
        return torch.stack(
            [
                torch.stack([hd95(y_pred[b, c], y[b, c], self.percentile) for c in range(first, y.shape[1])])
                for b in range(y.shape[0])
            ]
        )

    def aggregate(self, reduction: MetricReduction | str | None = None):  # type: ignore[override]
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("the data to aggregate must be a PyTorch Tensor")
        value, not_nans = do_metric_reduction(data, reduction or self.reduction)
        return (value, not_nans) if self.get_not_nans else value
