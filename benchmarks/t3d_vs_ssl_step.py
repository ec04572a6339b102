"""T3D's training step against the image-only SSL step (``method_ssl_swin.json``), side by side in one run.

    python benchmarks/t3d_vs_ssl_step.py [--sizes toy paper] [--toy_steps 12] [--paper_steps 1]

Both trainers come from the bundle's own configs (``train#trainer`` of ``train.json`` [+ overlays]), so backbone,
crop size, batch, optimiser and gradient clipping are the bundle's; the one batch both sides train on is drawn
once from the bundle's data loader, so only the step is timed. Steps alternate T3D / SSL (after a warm-up step each
at toy size; a paper-size step takes about a minute on a CPU, so there the first step is timed); the median of each
side is compared (target: T3D <= 1.15 x SSL).

- ``toy``: ``cpu_toy.json`` (BasicUNet backbone, 32^3 crops, 16 volumes a step, the offline report encoder fully
  frozen, so its report features are computed once in ``initialize`` and only looked up per step).
- ``paper``: ``train.json`` (SwinUNETR feature_size 48, 96^3 crops) with one volume and one crop a step (a CPU
  budget; per-GPU batches of 1-4 volumes are the real regime), a BERT-base-size report encoder (random weights,
  built offline), its first 6 layers frozen as in ``train.json`` (the text encoder trains) and, as a third row,
  fully frozen (features cached).

For T3D the forward time is split by part (text encoder, image encoder, image head + text projection, interactor,
restoration decoder, TCL, TIR); the rest of the step is the backward pass and the optimiser.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
BUNDLE = os.path.join(REPO, "bundles", "t3d_pretrain")


def _workflow(configs: list[str], root: str, **overrides):
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=[os.path.join(BUNDLE, "configs", c) for c in configs], workflow_type=None, bundle_root=root,
        num_workers=0, device="$torch.device('cpu')", amp=False, **overrides,
    )  # fmt: skip
    workflow.initialize()
    return workflow


class PartTimer:
    """Wall time of chosen callables (module forwards and methods), summed per part over the timed steps."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.enabled = False

    def wrap(self, owner, attribute: str, part: str) -> None:
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            if not self.enabled:
                return original(*args, **kwargs)
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - start

        setattr(owner, attribute, timed)


def _instrument(trainer) -> PartTimer:
    timer = PartTimer()
    model = trainer.network
    timer.wrap(model.text_encoder, "forward", "text encoder")
    timer.wrap(model.image_backbone, "encode", "image encoder")
    timer.wrap(model.image_backbone, "decode", "restoration decoder")
    timer.wrap(model.image_head, "forward", "image head + text projection")
    timer.wrap(model.text_projection, "forward", "image head + text projection")
    if model.interactor is not None:
        timer.wrap(model.interactor, "forward", "interactor")
    timer.wrap(trainer.tcl_loss, "forward", "TCL loss")
    timer.wrap(trainer.tir_loss, "forward", "TIR loss")
    return timer


def _step_seconds(trainer, batch) -> float:
    start = time.perf_counter()
    trainer._iteration(trainer, batch)
    return time.perf_counter() - start


def compare(name: str, t3d, ssl, steps: int, warmup: bool = True) -> dict:
    batch = next(iter(t3d.data_loader))
    timer = _instrument(t3d)
    if warmup:  # allocator, thread pools: about a second, which only matters against steps of a second
        _step_seconds(t3d, batch), _step_seconds(ssl, batch)
    t3d_times, ssl_times = [], []
    for _ in range(steps):
        timer.enabled = True
        t3d_times.append(_step_seconds(t3d, batch))
        timer.enabled = False
        ssl_times.append(_step_seconds(ssl, batch))
    t3d_median, ssl_median = statistics.median(t3d_times), statistics.median(ssl_times)
    crops = tuple(batch["image"].shape)
    print(f"\n[{name}] batch {crops} (volumes, crops, channel, *crop), {steps} timed steps each, torch threads "
          f"{torch.get_num_threads()}")  # fmt: skip
    print(f"  T3D step {t3d_median:8.3f} s   image-only SSL step {ssl_median:8.3f} s   ratio T3D / SSL = "
          f"{t3d_median / ssl_median:.2f} (target <= 1.15)")  # fmt: skip
    total = sum(t3d_times)
    forward = 0.0
    for part, seconds in sorted(timer.seconds.items(), key=lambda kv: -kv[1]):
        forward += seconds
        print(f"    {part:30s} {seconds / steps:8.3f} s  {100 * seconds / total:5.1f} %")
    print(
        f"    {'backward + optimiser + rest':30s} {(total - forward) / steps:8.3f} s  "
        f"{100 * (total - forward) / total:5.1f} %"
    )
    return {"t3d_s": t3d_median, "ssl_s": ssl_median, "ratio": t3d_median / ssl_median, "parts": dict(timer.seconds)}


def toy(scratch: str, steps: int) -> dict:
    from custom.data.make_synthetic_pairs import make_synthetic_pairs
    from custom.weights.offline_text_encoder import build_offline_text_encoder

    data = os.path.join(scratch, "toy_data")
    make_synthetic_pairs(data, num_train=32, num_val=4, shape=(32, 32, 32), spacing=(10.0, 10.0, 10.0), seed=0)
    encoder = build_offline_text_encoder(os.path.join(scratch, "toy_text"))
    common = {"dataset_dir": data, "text_encoder_name": encoder}
    torch.manual_seed(0)
    t3d = _workflow(["train.json", "cpu_toy.json"], os.path.join(scratch, "toy_t3d"), **common)
    torch.manual_seed(0)
    ssl = _workflow(["train.json", "cpu_toy.json", "method_ssl_swin.json"], os.path.join(scratch, "toy_ssl"), **common)
    trainer = t3d.parser.get_parsed_content("train#trainer")
    return compare("toy: cpu_toy.json", trainer, ssl.parser.get_parsed_content("train#trainer"), steps)


def paper(scratch: str, steps: int) -> dict:
    from custom.data.make_synthetic_pairs import make_synthetic_pairs
    from custom.weights.offline_text_encoder import build_offline_text_encoder

    data = os.path.join(scratch, "paper_data")
    make_synthetic_pairs(data, num_train=4, num_val=2, shape=(128, 128, 112), spacing=(1.5, 1.5, 2.0), seed=0)
    encoder = build_offline_text_encoder(
        os.path.join(scratch, "base_text"), hidden_size=768, num_layers=12, num_heads=12, max_position_embeddings=512,
        vocab_size=8000, mlm_steps=0,
    )  # fmt: skip
    common = {"dataset_dir": data, "text_encoder_name": encoder, "batch_size": 1, "crops_per_volume": 1}
    torch.manual_seed(0)
    ssl = _workflow(["train.json", "method_ssl_swin.json"], os.path.join(scratch, "paper_ssl"), **common)
    ssl_trainer = ssl.parser.get_parsed_content("train#trainer")
    results = {}
    for label, frozen in (("text encoder trains (frozen_layers 6)", 6), ("text encoder fully frozen, cached", -1)):
        torch.manual_seed(0)
        t3d = _workflow(
            ["train.json"], os.path.join(scratch, f"paper_t3d{frozen}"), text_frozen_layers=frozen, **common
        )
        trainer = t3d.parser.get_parsed_content("train#trainer")
        results[label] = compare(f"paper: train.json, {label}", trainer, ssl_trainer, steps, warmup=False)
        del t3d
    return results


def main(sizes: list[str], toy_steps: int, paper_steps: int) -> dict:
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        if "toy" in sizes:
            results["toy"] = toy(scratch, toy_steps)
        if "paper" in sizes:
            results["paper"] = paper(scratch, paper_steps)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["toy", "paper"], choices=("toy", "paper"))
    parser.add_argument("--toy_steps", type=int, default=12)
    parser.add_argument("--paper_steps", type=int, default=1)
    args = parser.parse_args()
    main(args.sizes, args.toy_steps, args.paper_steps)
