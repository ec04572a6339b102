"""Full-size BTCV inference, side by side: the model zoo's tail against the bundle's lean one, peak memory and time.

    python benchmarks/btcv_full_size_inference.py [--input full|real] [--device cpu] [--sw_batch_size 4]

Both sides run ``bundles/t3d_btcv_seg/configs/inference.json`` (SwinUNETR feature_size 48, random weights seeded,
1.5 x 1.5 x 2 mm, 96^3 windows, overlap 0.5, Gaussian weighting, the same device), each in its
own process so each peak resident memory (``VmHWM``) is its own. They differ only in the post-processing tail:

- ``zoo`` (``swin_unetr_btcv_segmentation``'s): ``sw_batch_size`` 4; ``Spacingd`` resampling in MONAI's default
  float64; softmax -> ``Invertd`` of all 14 probability channels to the input grid -> ``AsDiscreted(argmax)`` -> save.
- ``lean`` (the bundle's defaults): ``sw_batch_size`` 4 on a GPU, 2 on the CPU (where the windows' activations sit in
  host memory); ``Spacingd`` in float32 (its inverse builds a float32 sampling grid of the input's size, half the
  float64 one); softmax -> ``InvertArgmaxd`` (one channel inverted at a time, running maximum) -> save.

``--input full`` (default): a 512 x 512 x 246 CT at 0.75 x 0.75 x 1.0 mm, the real CT of ``tests/data/real_ct``
resampled and padded with air. ``--input real``: that CT as it is (122 x 101 x 112 at 3 mm). Prints each side's
wall time and peak RSS, the ratios lean / zoo (targets: memory <= 0.5, time <= 1.0) and the fraction of voxels
whose label agrees.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import nibabel as nib
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
BUNDLE = os.path.join(REPO, "bundles", "t3d_btcv_seg")
REAL_CT = os.path.join(REPO, "tests", "data", "real_ct", "example_ct.nii.gz")
FULL_SHAPE, FULL_SPACING = (512, 512, 246), (0.75, 0.75, 1.0)

#: the model zoo's post-processing, as ``swin_unetr_btcv_segmentation``'s inference.json has it
ZOO_POSTPROCESSING = {
    "_target_": "Compose",
    "transforms": [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        {
            "_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
            "nearest_interp": False, "to_tensor": True,
        },
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
        {
            "_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
            "output_dtype": "$numpy.uint8", "resample": False, "separate_folder": False,
        },
    ],
}  # fmt: skip


def full_size_ct(path: str) -> None:
    """The real CT resampled to 0.75 x 0.75 x 1.0 mm, centred in 512 x 512 x 246 (air padding, centre crop)."""
    import torch
    from monai.transforms import Spacing

    source = nib.load(REAL_CT)
    image = torch.from_numpy(np.asarray(source.dataobj, dtype=np.float32))[None]
    from monai.data import MetaTensor

    resampled = Spacing(pixdim=FULL_SPACING, mode="bilinear")(MetaTensor(image, affine=torch.from_numpy(source.affine)))
    array = resampled[0].numpy()
    out = np.full(FULL_SHAPE, -1000, np.int16)
    src, dst = [], []
    for n, m in zip(array.shape, FULL_SHAPE):
        if n >= m:
            start = (n - m) // 2
            src.append(slice(start, start + m))
            dst.append(slice(0, m))
        else:
            start = (m - n) // 2
            src.append(slice(0, n))
            dst.append(slice(start, start + n))
    out[tuple(dst)] = np.round(array[tuple(src)]).astype(np.int16)
    nib.save(nib.Nifti1Image(out, np.diag([*FULL_SPACING, 1.0])), path)


def _peak_rss_gib() -> float:
    """This process's peak resident memory since it started: ``VmHWM`` (``ru_maxrss`` would carry the parent's peak
    over ``fork`` + ``exec``)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # not Linux


def run_side(side: str, image: str, scratch: str, device: str, sw_batch_size: int | None, **config_overrides) -> dict:
    """One inference in this process (weights: ``scratch/model.pt``); the result line is printed as JSON for the
    parent. ``config_overrides``: extra ids of ``inference.json`` (``gpu_check.py --dry`` shrinks the network)."""
    import torch
    from monai.bundle import ConfigWorkflow

    output_dir = os.path.join(scratch, side)
    overrides = {"postprocessing": ZOO_POSTPROCESSING, "sw_batch_size": 4} if side == "zoo" else {}
    if sw_batch_size is not None:
        overrides["sw_batch_size"] = sw_batch_size
    overrides.update(config_overrides)
    workflow = ConfigWorkflow(
        config_file=os.path.join(BUNDLE, "configs", "inference.json"), workflow_type=None, bundle_root=BUNDLE,
        images=[image], output_dir=output_dir, ckpt_dir=scratch, device=f"$torch.device('{device}')",
        num_workers=0, **overrides,
    )  # fmt: skip
    if side == "zoo":  # the zoo's resampling runs in MONAI's default float64 (the bundle's inference.json: float32)
        for transform in workflow.parser["preprocessing"]["transforms"]:
            if transform["_target_"] == "Spacingd":
                transform.pop("dtype", None)
    workflow.initialize()
    before = _peak_rss_gib()
    start = time.perf_counter()
    workflow.run()
    seconds = time.perf_counter() - start
    workflow.finalize()
    peak = _peak_rss_gib()
    peak_gpu = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else 0.0
    return {
        "side": side,
        "sw_batch_size": workflow.parser.get_parsed_content("sw_batch_size"),
        "seconds": seconds,
        "peak_rss_gib": peak,
        "rss_before_gib": before,
        "peak_gpu_gib": peak_gpu,
    }


def main(input_kind: str, device: str, sw_batch_size: int | None) -> dict:
    import torch
    from monai.networks.nets import SwinUNETR

    with tempfile.TemporaryDirectory() as scratch:
        image = os.path.join(scratch, "ct.nii.gz")
        if input_kind == "full":
            full_size_ct(image)
        else:
            image = REAL_CT
        source = nib.load(image)
        print(
            f"input {source.shape} at {tuple(round(float(z), 2) for z in source.header.get_zooms()[:3])} mm; "
            f"device {device}, sw_batch_size {sw_batch_size or 'zoo 4, lean the bundle default'}, "
            f"torch threads {torch.get_num_threads()}",
            flush=True,
        )
        torch.manual_seed(0)
        network = SwinUNETR(in_channels=1, out_channels=14, feature_size=48)
        torch.save(network.state_dict(), os.path.join(scratch, "model.pt"))
        del network
        results = {}
        for side in ("zoo", "lean"):
            command = [
                sys.executable,
                os.path.abspath(__file__),
                "--side",
                side,
                "--image",
                image,
                "--scratch",
                scratch,
                "--device",
                device,
            ] + (["--sw_batch_size", str(sw_batch_size)] if sw_batch_size else [])
            done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
            if done.returncode:
                sys.exit(f"{side} side failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
            results[side] = json.loads(done.stdout.strip().splitlines()[-1])
            r = results[side]
            print(
                f"{side:4s}: sw_batch_size {r['sw_batch_size']}, wall {r['seconds']:7.1f} s, "
                f"peak RSS {r['peak_rss_gib']:5.2f} GiB (after start-up {r['rss_before_gib']:.2f} GiB)"
                + (f", peak GPU {r['peak_gpu_gib']:.2f} GiB" if r["peak_gpu_gib"] else ""),
                flush=True,
            )
        name = os.path.basename(image).replace(".nii.gz", "_seg.nii.gz")
        zoo = np.asarray(nib.load(os.path.join(scratch, "zoo", name)).dataobj)
        lean = np.asarray(nib.load(os.path.join(scratch, "lean", name)).dataobj)
    agree = float((zoo == lean).mean())
    memory = results["lean"]["peak_rss_gib"] / results["zoo"]["peak_rss_gib"]
    seconds = results["lean"]["seconds"] / results["zoo"]["seconds"]
    print(f"labels: {zoo.shape}, fraction of voxels agreeing {agree:.6f} ({int((zoo != lean).sum())} differ)")
    print(f"ratio lean / zoo: peak memory {memory:.2f} (target <= 0.5), time {seconds:.2f} (target <= 1.0)")
    return {**results, "agree": agree, "memory_ratio": memory, "time_ratio": seconds}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default="full", choices=("full", "real"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--sw_batch_size", type=int, default=None, help="both sides (default: zoo 4, lean the bundle's)"
    )
    parser.add_argument("--side", choices=("zoo", "lean"), help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(run_side(args.side, args.image, args.scratch, args.device, args.sw_batch_size)))
    else:
        main(args.input, args.device, args.sw_batch_size)
