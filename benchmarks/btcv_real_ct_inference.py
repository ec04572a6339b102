"""Wall time and peak memory of BTCV inference with the paper-size network on the real CT, on this machine.

Runs ``bundles/t3d_btcv_seg/configs/inference.json`` unchanged (SwinUNETR feature_size 48, 1.5 x 1.5 x 2 mm,
96^3 sliding window, overlap 0.5, Gaussian weighting, ``Invertd`` back to the input grid) on
``tests/data/real_ct/example_ct.nii.gz`` (122 x 101 x 112 at 3 mm, a thorax-abdomen CT). Weights are the bundle's
``models/model.pt`` if given, else a random initialisation: the cost does not depend on the weight values.

    python benchmarks/btcv_real_ct_inference.py [--checkpoint bundles/t3d_btcv_seg/models/model.pt] [--device cpu]

Prints the input / resampled sizes, the number of sliding windows, wall time of the whole evaluator run and the
process's peak resident memory (``ru_maxrss``, includes the Python/MONAI baseline).
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import tempfile
import time

import nibabel as nib
import torch
from monai.bundle import ConfigWorkflow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLE = os.path.join(REPO, "bundles", "t3d_btcv_seg")
IMAGE = os.path.join(REPO, "tests", "data", "real_ct", "example_ct.nii.gz")


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def main(checkpoint: str | None, device: str, sw_batch_size: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        workflow = ConfigWorkflow(
            config_file=os.path.join(BUNDLE, "configs", "inference.json"),
            workflow_type=None,
            bundle_root=BUNDLE,
            images=[IMAGE],
            output_dir=scratch,
            ckpt_dir=os.path.dirname(checkpoint) if checkpoint else scratch,
            device=f"$torch.device('{device}')",
            sw_batch_size=sw_batch_size,
            num_workers=0,
        )
        workflow.initialize()
        if not checkpoint:
            network = workflow.parser.get_parsed_content("network_def")
            torch.save(network.state_dict(), os.path.join(scratch, "model.pt"))
        source = nib.load(IMAGE)
        zooms, pixdim = source.header.get_zooms()[:3], workflow.parser.get_parsed_content("pixdim")
        resampled = [round(n * z / p) for n, z, p in zip(source.shape, zooms, pixdim)]
        roi, overlap = workflow.parser.get_parsed_content("roi_size"), workflow.parser.get_parsed_content("overlap")
        steps = [math.ceil((max(n, r) - r) / (r * (1 - overlap))) + 1 for n, r in zip(resampled, roi)]
        windows = math.prod(steps)
        print(
            f"input {source.shape} at {tuple(float(z) for z in zooms)} mm -> about {tuple(resampled)} at "
            f"{tuple(pixdim)} mm; {windows} windows of {tuple(roi)}, overlap {overlap}, sw_batch_size {sw_batch_size}, "
            f"device {device}, torch threads {torch.get_num_threads()}"
        )
        baseline = _peak_rss_gib()
        start = time.perf_counter()
        workflow.run()
        elapsed = time.perf_counter() - start
        workflow.finalize()
        saved = nib.load(os.path.join(scratch, "example_ct_seg.nii.gz"))
        assert saved.shape == source.shape, (saved.shape, source.shape)
        print(f"wall time {elapsed:.1f} s; peak RSS {_peak_rss_gib():.2f} GiB (before the run {baseline:.2f} GiB); "
              f"prediction {saved.shape} saved in the input geometry")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="models/model.pt of the bundle (default: random weights)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sw_batch_size", type=int, default=4, help="the bundle's default is 4")
    args = parser.parse_args()
    main(args.checkpoint, args.device, args.sw_batch_size)
