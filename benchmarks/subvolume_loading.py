"""High-resolution data path: 96^3 crops per second from one 512x512x300 int16 CT, measured side by side.

    python benchmarks/subvolume_loading.py [--crops 400] [--naive_samples 3]

- ``project``: ``VolumeCache`` (decode + preprocess once, then memory-mapped float16) + body-biased K=4 crops, the
  path ``PairsDataset`` uses in training. The one-off caching time is printed separately.
- ``naive``: a MONAI pipeline that loads and transforms the whole volume for every sample
  (LoadImaged -> EnsureChannelFirstd -> Orientationd -> ScaleIntensityRanged -> RandSpatialCropSamplesd, 4 crops).
- ``copy limit``: copying 96^3 crops out of the same float16 array already in memory, converting to float32 — the
  bytes every crop must move at least once; how close ``project`` gets to it is what is left to gain.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import nibabel as nib
import numpy as np
import torch

from custom.data.synthetic_ct import Finding, render_phantom
from custom.data.volume_cache import VolumeCache
from custom.transforms.preprocessing import VolumePreprocessing
from custom.transforms.subvolume import read_crop, sample_crop_origins

CROP = (96, 96, 96)
CROPS_PER_SAMPLE = 4


def _naive_pipeline():
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        LoadImaged,
        Orientationd,
        RandSpatialCropSamplesd,
        ScaleIntensityRanged,
    )

    return Compose(
        [
            LoadImaged(keys="image", image_only=True),
            EnsureChannelFirstd(keys="image"),
            Orientationd(keys="image", axcodes="RAS"),
            ScaleIntensityRanged(keys="image", a_min=-1000, a_max=1000, b_min=0.0, b_max=1.0, clip=True),
            RandSpatialCropSamplesd(keys="image", roi_size=CROP, num_samples=CROPS_PER_SAMPLE, random_size=False),
        ]
    )


def main(crops: int = 400, naive_samples: int = 3) -> dict:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        phantom = render_phantom([Finding("mass", "right", "upper", 40.0)], shape=(512, 512, 300), spacing=(0.7, 0.7, 1.0), seed=0)
        path = os.path.join(tmp, "ct.nii.gz")
        nib.save(nib.Nifti1Image(phantom.image, phantom.affine), path)
        print(f"volume: {phantom.image.shape} int16, {os.path.getsize(path) / 2**20:.0f} MiB as .nii.gz")

        cache = VolumeCache(os.path.join(tmp, "cache"), VolumePreprocessing())
        start = time.perf_counter()
        cache.prepare([path], progress=False)
        caching_seconds = time.perf_counter() - start

        volume = cache.load(path)
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        for _ in range(crops // CROPS_PER_SAMPLE):
            origins = sample_crop_origins(volume.array.shape, CROP, volume.foreground, CROPS_PER_SAMPLE, 0.9, rng)
            np.stack([read_crop(volume.array, o, CROP) for o in origins])
        project = crops / (time.perf_counter() - start)

        in_memory = np.ascontiguousarray(volume.array)
        start = time.perf_counter()
        for _ in range(crops // CROPS_PER_SAMPLE):
            origins = sample_crop_origins(in_memory.shape, CROP, volume.foreground, CROPS_PER_SAMPLE, 0.9, rng)
            np.stack([in_memory[o[0] : o[0] + 96, o[1] : o[1] + 96, o[2] : o[2] + 96].astype(np.float32) for o in origins])
        copy_limit = crops / (time.perf_counter() - start)

        pipeline = _naive_pipeline()
        start = time.perf_counter()
        for _ in range(naive_samples):
            pipeline({"image": path})
        naive = naive_samples * CROPS_PER_SAMPLE / (time.perf_counter() - start)

    results = {
        "caching_seconds_once": caching_seconds,
        "project_crops_per_s": project,
        "naive_crops_per_s": naive,
        "copy_limit_crops_per_s": copy_limit,
        "project_over_naive": project / naive,
        "project_over_copy_limit": project / copy_limit,
    }
    print(f"one-off caching: {caching_seconds:.1f} s")
    print(f"project : {project:8.1f} crops/s")
    print(f"naive   : {naive:8.2f} crops/s")
    print(f"copy    : {copy_limit:8.1f} crops/s (limit: copying the crop bytes)")
    print(f"ratio project / naive      = {results['project_over_naive']:.0f}x")
    print(f"ratio project / copy limit = {results['project_over_copy_limit']:.2f}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", type=int, default=400)
    parser.add_argument("--naive_samples", type=int, default=3)
    args = parser.parse_args()
    main(args.crops, args.naive_samples)
