"""High-resolution data path: 96^3 crops per second from one 512x512x300 int16 CT, measured side by side.

    python benchmarks/subvolume_loading.py [--crops 400] [--naive_samples 3]

- ``project``: ``PairsDataset.__getitem__``'s path after the one-off caching (printed separately): open the
  ``VolumeCache`` entry (memory maps, no voxel read), draw K=4 stratified crop origins from the cached body grid,
  copy the crops out as float16 and hand them to torch. The trainers convert float16 -> float32 on their device.
- ``naive``: a MONAI pipeline that loads and transforms the whole volume for every sample
  (LoadImaged -> EnsureChannelFirstd -> Orientationd -> ScaleIntensityRanged -> RandSpatialCropSamplesd, 4 crops).
- ``copy limit``: copying the same crops' float16 bytes out of an array already in memory at origins drawn in
  advance: the bytes every crop must move at least once. ``project / copy limit`` is what is left to gain. The array
  sits on 4 KiB pages like the page cache the memory map reads; the same copy from transparent huge pages (numpy's
  default for large arrays) is printed too: the difference is TLB misses, not work the loader could skip.
- ``project, volume mapped afresh per sample``: ``VolumeCache(max_open=0)``, what a volume not among the last
  ``max_open`` opened costs (page faults on every page of the crop; data in the page cache).
- ``project, float32 on the host``: the former path (numpy converts each crop to float32 while copying), printed so
  the gain of converting on the device stays visible.
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
from custom.transforms.subvolume import read_crops, stratified_crop_origins

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
        phantom = render_phantom(
            [Finding("mass", "right", "upper", 40.0)], shape=(512, 512, 300), spacing=(0.7, 0.7, 1.0), seed=0
        )
        path = os.path.join(tmp, "ct.nii.gz")
        nib.save(nib.Nifti1Image(phantom.image, phantom.affine), path)
        print(f"volume: {phantom.image.shape} int16, {os.path.getsize(path) / 2**20:.0f} MiB as .nii.gz")

        cache = VolumeCache(os.path.join(tmp, "cache"), VolumePreprocessing())
        start = time.perf_counter()
        cache.prepare([path], progress=False)
        caching_seconds = time.perf_counter() - start

        rng = np.random.default_rng(0)

        unmapped_cache = VolumeCache(cache.cache_dir, VolumePreprocessing(), max_open=0)

        def project_sample(dtype=None, volumes: VolumeCache = cache) -> torch.Tensor:
            volume = volumes.load(path)  # what every PairsDataset item does: open, sample, copy
            origins = stratified_crop_origins(
                volume.array.shape, CROP, volume.foreground, CROPS_PER_SAMPLE, rng, body_grid=volume.body_grid
            )
            return torch.from_numpy(read_crops(volume.array, origins, CROP, dtype=dtype)[:, None])

        def timed(sample, samples: int) -> float:
            sample()  # warm: page cache and first-touch mappings, the same for every side
            start = time.perf_counter()
            for _ in range(samples):
                sample()
            return samples * CROPS_PER_SAMPLE / (time.perf_counter() - start)

        samples = crops // CROPS_PER_SAMPLE
        # numpy asks for transparent huge pages on large allocations; the page cache the memory map reads from has
        # 4 KiB pages, and TLB misses alone cost ~15 % of a crop copy, so the limit is measured on both page sizes
        set_huge_pages = np._core.multiarray._set_madvise_hugepage
        was_huge = set_huge_pages(False)
        in_memory = np.ascontiguousarray(cache.load(path).array)
        set_huge_pages(True)
        in_memory_huge = np.ascontiguousarray(cache.load(path).array)
        set_huge_pages(was_huge)
        grid = cache.load(path).body_grid
        drawn = [
            stratified_crop_origins(in_memory.shape, CROP, grid.points, CROPS_PER_SAMPLE, rng, body_grid=grid)
            for _ in range(samples)
        ]

        calls = [0]

        def copy_sample(source: np.ndarray = in_memory) -> np.ndarray:
            origins = drawn[calls[0] % len(drawn)]
            calls[0] += 1
            return np.stack([source[o[0] : o[0] + 96, o[1] : o[1] + 96, o[2] : o[2] + 96] for o in origins])

        # interleaved rounds so drift (clock, page cache, other load) hits every side alike; best round of each
        project = copy_limit = copy_limit_huge = 0.0
        for _ in range(3):
            project = max(project, timed(project_sample, samples))
            copy_limit = max(copy_limit, timed(copy_sample, samples))
            copy_limit_huge = max(copy_limit_huge, timed(lambda: copy_sample(in_memory_huge), samples))
        host_float32 = timed(lambda: project_sample(np.float32), samples)
        fresh_map = timed(lambda: project_sample(volumes=unmapped_cache), samples)
        on_device = torch.from_numpy(np.stack([in_memory[:96, :96, :96]] * CROPS_PER_SAMPLE))
        on_device.float()
        start = time.perf_counter()
        for _ in range(samples):
            on_device.float()
        convert_per_crop_ms = (time.perf_counter() - start) / (samples * CROPS_PER_SAMPLE) * 1e3

        pipeline = _naive_pipeline()
        start = time.perf_counter()
        for _ in range(naive_samples):
            pipeline({"image": path})
        naive = naive_samples * CROPS_PER_SAMPLE / (time.perf_counter() - start)

    results = {
        "caching_seconds_once": caching_seconds,
        "project_crops_per_s": project,
        "project_host_float32_crops_per_s": host_float32,
        "project_fresh_map_crops_per_s": fresh_map,
        "torch_float16_to_float32_ms_per_crop": convert_per_crop_ms,
        "naive_crops_per_s": naive,
        "copy_limit_crops_per_s": copy_limit,
        "copy_limit_huge_pages_crops_per_s": copy_limit_huge,
        "project_over_naive": project / naive,
        "project_over_copy_limit": project / copy_limit,
    }
    print(f"one-off caching: {caching_seconds:.1f} s")
    print(f"project : {project:8.1f} crops/s (float16 crops, stratified origins, cache opened per sample)")
    print(f"naive   : {naive:8.2f} crops/s")
    print(f"copy    : {copy_limit:8.1f} crops/s (limit: copying the crops' float16 bytes from memory, 4 KiB pages)")
    print(f"copy, huge pages: {copy_limit_huge:8.1f} crops/s (the same from transparent huge pages)")
    print(f"project, float32 on the host: {host_float32:8.1f} crops/s (numpy conversion while copying)")
    print(f"project, volume mapped afresh per sample: {fresh_map:8.1f} crops/s (a page fault per 4 KiB page touched)")
    print(
        f"torch float16 -> float32 of one crop on the CPU: {convert_per_crop_ms:.3f} ms (the trainer's, on its device)"
    )
    print(f"ratio project / naive      = {results['project_over_naive']:.0f}x")
    print(f"ratio project / copy limit = {results['project_over_copy_limit']:.2f} (target >= 0.9)")
    print(f"ratio project / copy limit on huge pages = {project / copy_limit_huge:.2f}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", type=int, default=400)
    parser.add_argument("--naive_samples", type=int, default=3)
    args = parser.parse_args()
    main(args.crops, args.naive_samples)
