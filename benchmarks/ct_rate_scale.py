"""CT-RATE curation and volume-cache preparation at scale: time and disk per study, peak memory against study count,
and an interrupted curation that resumes.

    nice -n 10 python benchmarks/ct_rate_scale.py --studies 2000 --work /tmp/ct_rate_scale [--out results.json]

Steps (all on one CPU process unless ``--workers``):

1. generate ``--studies`` studies in CT-RATE's layout (:func:`t3d_tools.curation.ct_rate.miniature.make_miniature`,
   one scan and one reconstruction per patient, the real CT downsampled by ``--downsample``; the ``train`` ones with
   the blank-header quirk, so every one of them is repaired from the metadata);
2. curate them, killing the run (SIGKILL) once about half the volumes are logged, then run it again: the second run
   must not redo a logged volume (``resumed_recomputed`` counts the ones it did redo);
3. a clean curation of the same folder (no log), with the process's resident memory sampled every ``--every``
   volumes (``ru_maxrss`` so far, and the current RSS);
4. the volume cache (``custom.data.volume_cache.VolumeCache`` with ``train.json``'s preprocessing) for every curated
   image, sampled the same way;
5. one full-size volume (the real CT resampled to 512 x 512 x 285, CT-RATE's mean slice count: 14.3 M slices over
   50,188 volumes) through the curation repair and the cache, to project per-voxel costs to CT-RATE.

Prints one JSON document (also written to ``--out``): per-step seconds, seconds per study, bytes per study, memory
samples, and the projection to CT-RATE's 50,188 reconstructions / 25,692 studies.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

CT_RATE_VOLUMES, CT_RATE_STUDIES, CT_RATE_MEAN_SLICES = 50188, 25692, 14_300_000 / 50188


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _disk(path: str) -> int:
    total = 0
    for base, _, names in os.walk(path):
        total += sum(os.path.getsize(os.path.join(base, n)) for n in names)
    return total


def _lines(path: str) -> int:
    if not os.path.isfile(path):
        return 0
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


def _curate_command(root: str, out: str, workers: int) -> list[str]:
    return [sys.executable, "-m", "t3d_tools.curation.ct_rate", "curate", "--root", root, "--out", out]


def interrupted_then_resumed(root: str, out: str, total: int) -> dict:
    """Kill a curation once half the volumes are logged, then finish it; count what the second run recomputed."""
    log = os.path.join(out, "cache", "volumes.jsonl")
    env = {**os.environ, "PYTHONPATH": REPO}
    command = _curate_command(root, out, 1) + ["--progress", "False"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while process.poll() is None and _lines(log) < total // 2:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    logged = _lines(log)
    start = time.perf_counter()
    finished = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = _lines(log)
    return {
        "killed_after_logged": logged,
        "second_run_exit": finished.returncode,
        "second_run_logged": after - logged,
        "resumed_recomputed": max(0, (after - logged) - (total - logged)),
        "second_run_s": round(seconds, 2),
    }


def sampled_curation(root: str, out: str, every: int, workers: int) -> dict:
    from t3d_tools.curation.ct_rate import curate as curate_module
    from t3d_tools.curation.ct_rate import volumes

    samples = []
    original_add = volumes.VolumeLog.add

    def add(self, record):  # sample memory as the log grows
        original_add(self, record)
        if len(self.records) % every == 0:
            sample = {"volumes": len(self.records), "rss_mb": round(_rss_mb(), 1), "peak_mb": round(_peak_mb(), 1)}
            samples.append(sample)

    volumes.VolumeLog.add = add
    try:
        start = time.perf_counter()
        summary = curate_module.curate(root, out, workers=workers, progress=False)
        seconds = time.perf_counter() - start
    finally:
        volumes.VolumeLog.add = original_add
    return {"seconds": seconds, "summary": summary, "samples": samples}


def sampled_cache(out: str, cache_dir: str, every: int) -> dict:
    from custom.data.datalist import read_split
    from custom.data.volume_cache import VolumeCache
    from custom.transforms.preprocessing import VolumePreprocessing

    datalist = os.path.join(out, "pairs_datalist.json")
    paths = [r["image"] for split in ("training", "validation") for r in read_split(datalist, split)]
    cache = VolumeCache(cache_dir, VolumePreprocessing("ct", (-1000.0, 1000.0), None))
    samples = []
    start = time.perf_counter()
    for index, path in enumerate(paths, 1):
        cache.build(path)
        if index % every == 0:
            samples.append({"volumes": index, "rss_mb": round(_rss_mb(), 1), "peak_mb": round(_peak_mb(), 1)})
    return {"seconds": time.perf_counter() - start, "volumes": len(paths), "samples": samples}


def full_size_volume(work: str) -> dict:
    """The real CT resampled to 512 x 512 x 285 with CT-RATE's blank header: repair and cache one volume."""
    import torch
    import torch.nn.functional as F

    from custom.data.volume_cache import VolumeCache
    from custom.transforms.preprocessing import VolumePreprocessing
    from t3d_tools.curation.ct_rate.miniature import REAL_CT
    from t3d_tools.curation.ct_rate.tables import Geometry
    from t3d_tools.curation.ct_rate.volumes import VolumeTask, process_volume

    shape = (512, 512, int(round(CT_RATE_MEAN_SLICES)))
    real = torch.from_numpy(np.asanyarray(nib.load(REAL_CT).dataobj).astype(np.float32))[None, None]
    big = F.interpolate(real, size=shape, mode="trilinear", align_corners=False)[0, 0].numpy()
    source = os.path.join(work, "full_size", "train_1_a_1.nii.gz")
    os.makedirs(os.path.dirname(source), exist_ok=True)
    nib.save(nib.Nifti1Image((np.rint(big) + 1024).astype(np.int16), np.eye(4)), source)
    del real, big
    geometry = Geometry((0.7, 0.7, 1.5), 1.0, -1024.0, None, None)
    repaired = os.path.join(work, "full_size", "repaired.nii.gz")
    task = VolumeTask("train_1_a_1.nii.gz", source, repaired, geometry, "auto", 20)
    start = time.perf_counter()
    record = process_volume(task)
    repair_s = time.perf_counter() - start
    cache = VolumeCache(os.path.join(work, "full_size", "cache"), VolumePreprocessing("ct", (-1000.0, 1000.0), None))
    start = time.perf_counter()
    cache.build(record["image"])
    cache_s = time.perf_counter() - start
    return {
        "shape": list(shape),
        "voxels": int(np.prod(shape)),
        "source_bytes": os.path.getsize(source),
        "repaired_bytes": os.path.getsize(record["image"]),
        "cache_bytes": _disk(os.path.join(work, "full_size", "cache")),
        "repair_s": round(repair_s, 2),
        "cache_s": round(cache_s, 2),
        "peak_mb_after": round(_peak_mb(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=2000)
    parser.add_argument("--work", default="/tmp/ct_rate_scale")
    parser.add_argument("--downsample", type=int, default=4)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from t3d_tools.curation.ct_rate.miniature import make_miniature

    shutil.rmtree(args.work, ignore_errors=True)
    root = os.path.join(args.work, "dataset")
    valid = max(1, args.studies // 10)
    start = time.perf_counter()
    made = make_miniature(root, args.studies - valid, valid, args.downsample, many_scans=False, progress=True)
    generate_s = time.perf_counter() - start
    result: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "studies": made["volumes"],
        "generate_s": round(generate_s, 1),
        "input_bytes_per_study": _disk(root) // made["volumes"],
    }
    result["resume"] = interrupted_then_resumed(root, os.path.join(args.work, "resumed"), made["volumes"])
    out = os.path.join(args.work, "curated")
    curation = sampled_curation(root, out, args.every, args.workers)
    result["curation"] = {
        "seconds": round(curation["seconds"], 1),
        "s_per_study": round(curation["seconds"] / made["volumes"], 4),
        "bytes_per_study": _disk(out) // made["volumes"],
        "memory": curation["samples"],
        "rows": curation["summary"]["rows"],
    }
    cache = sampled_cache(out, os.path.join(args.work, "cache"), args.every)
    result["cache"] = {
        "seconds": round(cache["seconds"], 1),
        "s_per_study": round(cache["seconds"] / cache["volumes"], 4),
        "bytes_per_study": _disk(os.path.join(args.work, "cache")) // cache["volumes"],
        "memory": cache["samples"],
    }
    full = full_size_volume(args.work)
    result["full_size_volume"] = full
    per_study_disk = full["repaired_bytes"] + full["cache_bytes"]
    result["projection"] = {
        "assumption": f"every volume 512 x 512 x {full['shape'][2]} (CT-RATE's mean slice count), all headers blank",
        "all_reconstructions": {
            "volumes": CT_RATE_VOLUMES,
            "cpu_hours": round(CT_RATE_VOLUMES * (full["repair_s"] + full["cache_s"]) / 3600, 1),
            "disk_tb": round(CT_RATE_VOLUMES * per_study_disk / 1e12, 2),
        },
        "one_reconstruction_per_study": {
            "volumes": CT_RATE_STUDIES,
            "cpu_hours": round(CT_RATE_STUDIES * (full["repair_s"] + full["cache_s"]) / 3600, 1),
            "disk_tb": round(CT_RATE_STUDIES * per_study_disk / 1e12, 2),
        },
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
