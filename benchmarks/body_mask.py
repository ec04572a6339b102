"""The body mask and the evaluation crops on CT-like geometry: one 512x512x300 CT, the patient in a larger field of
view with air and a table around it (:func:`custom.data.synthetic_ct.render_scan`).

    python benchmarks/body_mask.py [--shape 512 512 300] [--crop 96] [--eval_grid 3]

Prints, side by side on the same volume:

- **body rule**: time and peak extra memory (tracemalloc, numpy's allocations) of turning the preprocessed volume
  into the cache's body points, for the rule of 06931fc (``argwhere(volume > 0.25)`` then 50,000 of them) and for
  :func:`custom.transforms.body_mask.body_mask` + ``sample``; how much of the patient each covers (the lungs), and
  how much air and table.
- **cache preparation**: ``VolumeCache.build`` of the ``.nii.gz``, against its load + decode + preprocessing alone.
- **evaluation crops**: body fraction of each of the ``eval_grid``^3 crops, for the whole-volume grid of 06931fc and
  for :func:`custom.transforms.subvolume.evaluation_crop_origins` (what ``PairsDataset(eval_grid=n)`` uses).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import tracemalloc

import nibabel as nib
import numpy as np

from custom.data.synthetic_ct import render_scan
from custom.data.volume_cache import VolumeCache
from custom.transforms.body_mask import body_mask
from custom.transforms.preprocessing import VolumePreprocessing
from custom.transforms.subvolume import BodyGrid, evaluation_crop_origins
from custom.transforms.volume_checks import load_nifti_checked

POINTS = 50000
THRESHOLD = 0.25


def _measured(function):
    """``(result, seconds, peak MiB of new allocations)``."""
    tracemalloc.start()
    start = time.perf_counter()
    result = function()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, seconds, peak


def _threshold_rule(volume: np.ndarray) -> np.ndarray:
    """The body points of 06931fc: every voxel above the threshold listed, then a seeded subset."""
    body = np.argwhere(volume > THRESHOLD).astype(np.int32)
    if len(body) > POINTS:
        body = body[np.random.default_rng(0).choice(len(body), POINTS, replace=False)]
    return body


def _whole_volume_grid(shape, crop, per_axis: int) -> np.ndarray:
    """The evaluation crops of 06931fc (``grid_crop_origins``): evenly spread over the whole array."""
    axes = [np.unique(np.linspace(0, max(s - c, 0), per_axis).round().astype(np.int64)) for s, c in zip(shape, crop)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def _body_fractions(body: np.ndarray, origins: np.ndarray, crop) -> np.ndarray:
    return np.asarray([body[tuple(slice(o, o + c) for o, c in zip(origin, crop))].mean() for origin in origins])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 300))
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--eval_grid", type=int, default=3)
    args = parser.parse_args()
    shape = tuple(args.shape)
    spacing = (0.78 * 512 / shape[0], 0.78 * 512 / shape[1], 1.25 * 300 / shape[2])
    crop = (args.crop,) * 3
    scan = render_scan(shape, spacing)
    lungs = scan.body & (scan.image < -500)
    volume = np.clip((scan.image.astype(np.float32) + 1000) / 2000, 0, 1)  # the default CT window
    mm = " x ".join(f"{s:.2f}" for s in spacing)
    lung_share = lungs.sum() / scan.body.sum()
    print(
        f"CT-like scan {shape} at {mm} mm: patient {scan.body.mean():.1%} of the field of view, lungs {lung_share:.1%}"
    )

    print("\nbody rule (preprocessed volume -> cached body points)")
    old, old_s, old_mib = _measured(lambda: _threshold_rule(volume))
    new, new_s, new_mib = _measured(
        lambda: body_mask(volume, THRESHOLD, spacing).sample(POINTS, np.random.default_rng(0))
    )
    mask = body_mask(volume, THRESHOLD, spacing).voxels()
    for name, points, seconds, mib in (("06931fc: argwhere > -500 HU", old, old_s, old_mib),
                                       ("body_mask + sample", new, new_s, new_mib)):  # fmt: skip
        inside = tuple(points.T)
        print(f"  {name:28s} {seconds:6.2f} s  peak +{mib:7.1f} MiB  points in the patient "
              f"{scan.body[inside].mean():.3f}, in the lungs {lungs[inside].mean():.3f}")  # fmt: skip
    print(f"  body_mask covers {mask[scan.body].mean():.3f} of the patient and {mask[lungs].mean():.3f} of the "
          f"lungs; {(mask & ~scan.body).sum() / mask.sum():.3f} of it is not patient (block edges, table)")  # fmt: skip

    print("\ncache preparation (one .nii.gz)")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ct.nii.gz")
        nib.save(nib.Nifti1Image(scan.image, scan.affine), path)
        preprocessing = VolumePreprocessing()
        _, decode_s, decode_mib = _measured(lambda: preprocessing(*load_nifti_checked(path)))
        cache = VolumeCache(os.path.join(tmp, "cache"), preprocessing)
        _, build_s, build_mib = _measured(lambda: cache.build(path))
        print(f"  load + decode + preprocess {decode_s:6.2f} s  peak +{decode_mib:7.1f} MiB")
        print(f"  VolumeCache.build          {build_s:6.2f} s  peak +{build_mib:7.1f} MiB  "
              f"({build_s / decode_s:.2f}x the decode time)")  # fmt: skip
        grid = cache.load(path).body_grid

    print(f"\nevaluation crops: {args.eval_grid}^3 crops of {args.crop}^3, body fraction of each")
    threshold_box = BodyGrid.build(shape, old)  # the same rule over the box of the old body (table included)
    for name, origins in (
        ("06931fc: whole-volume grid", _whole_volume_grid(shape, crop, args.eval_grid)),
        ("evaluation_crop_origins", evaluation_crop_origins(shape, crop, args.eval_grid, grid)),
        ("  ... over the 06931fc body", evaluation_crop_origins(shape, crop, args.eval_grid, threshold_box)),
    ):
        fractions = _body_fractions(scan.body, origins, crop)
        under = f"{(fractions < 0.05).sum():2d} under 5 % body, {(fractions < 0.25).sum():2d} under 25 %"
        print(f"  {name:28s} {len(origins)} crops: {under}; min {fractions.min():.3f}, mean {fractions.mean():.3f}")


if __name__ == "__main__":
    main()
