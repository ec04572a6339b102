"""One table of what a GPU machine does with the project; ``benchmarks/gpu_check.sh`` runs it (<= 8 min on one H200).

    bash benchmarks/gpu_check.sh          # on a CUDA machine
    bash benchmarks/gpu_check.sh --dry    # the same plumbing on the CPU at toy size (the test suite runs this)

Rows:
- pre-training steps/s of ``t3d_pretrain``'s ``train.json`` at paper size (SwinUNETR feature_size 48, 96^3 crops,
  4 volumes x 4 crops a step (the ``--dry`` toy: 4 volumes of ``cpu_toy.json``), activation checkpointing as
  configured), bf16 autocast and fp32, on one batch drawn once from the bundle's loader; peak GPU memory of each; an
  MFU estimate = FLOPs per step x steps/s / peak FLOP/s.
  FLOPs per step are counted by ``torch.utils.flop_counter.FlopCounterMode`` over one full step (forward, backward,
  including the activation-checkpoint recomputation); the peak is ``--peak_tflops_bf16`` / ``--peak_tflops_fp32``
  (defaults: H200 SXM dense bf16 989 and fp32 67 TFLOP/s).
- a one-process NCCL DDP smoke run of ``multi_gpu_train.json`` under ``torchrun`` (gloo when ``--dry``).
- BTCV inference (``t3d_btcv_seg`` ``inference.json``, the lean tail) on the 512 x 512 x 246 CT of
  ``btcv_full_size_inference.py``: wall time and peak GPU memory.

``--dry`` swaps in the CPU, ``cpu_toy.json`` sizes, gloo and a 40 x 40 x 30 crop of the real CT with a feature_size
12 network, so the whole script is checked in CI in about a minute; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import torch

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCHMARKS)
sys.path.insert(0, REPO)
sys.path.insert(0, BENCHMARKS)

from btcv_full_size_inference import REAL_CT, full_size_ct, run_side  # noqa: E402

PRETRAIN = os.path.join(REPO, "bundles", "t3d_pretrain")


def _pretrain_workflow(configs: list[str], root: str, **overrides):
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=[os.path.join(PRETRAIN, "configs", c) for c in configs], workflow_type=None, bundle_root=root,
        num_workers=0, **overrides,
    )  # fmt: skip
    workflow.initialize()
    return workflow


def _data(scratch: str, dry: bool) -> tuple[str, str]:
    from custom.data.make_synthetic_pairs import make_synthetic_pairs
    from custom.weights.offline_text_encoder import build_offline_text_encoder

    data = os.path.join(scratch, "data")
    shape, spacing = ((32, 32, 32), (10.0, 10.0, 10.0)) if dry else ((160, 160, 128), (1.5, 1.5, 2.0))
    make_synthetic_pairs(data, num_train=8, num_val=4, shape=shape, spacing=spacing, seed=0)
    size = {} if dry else {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "max_position_embeddings": 512}
    encoder = build_offline_text_encoder(
        os.path.join(scratch, "text"), vocab_size=8000 if not dry else 1000, mlm_steps=0, **size
    )
    return data, encoder


def pretraining_rows(scratch: str, data: str, encoder: str, dry: bool, device: str, steps: int, peaks: dict) -> list:
    from torch.utils.flop_counter import FlopCounterMode

    configs = ["train.json", "cpu_toy.json"] if dry else ["train.json"]
    rows = []
    for precision in ("bf16", "fp32"):
        torch.manual_seed(0)
        workflow = _pretrain_workflow(
            configs, os.path.join(scratch, f"pretrain_{precision}"), dataset_dir=data, text_encoder_name=encoder,
            device=f"$torch.device('{device}')", amp=precision == "bf16" and not dry, batch_size=4,
        )  # fmt: skip
        trainer = workflow.parser.get_parsed_content("train#trainer")
        batch = next(iter(trainer.data_loader))
        with FlopCounterMode(display=False) as counter:
            trainer._iteration(trainer, batch)
        flops = counter.get_total_flops()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        trainer._iteration(trainer, batch)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            trainer._iteration(trainer, batch)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        per_second = steps / (time.perf_counter() - start)
        peak_gib = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
        mfu = flops * per_second / (peaks[precision] * 1e12)
        shape = "x".join(str(n) for n in batch["image"].shape)
        rows.append(
            (
                f"pre-training, {precision}",
                f"{per_second:.3f} steps/s",
                f"peak GPU {peak_gib:.1f} GiB",
                f"MFU {100 * mfu:.1f} % ({flops / 1e12:.2f} TFLOP/step, batch {shape}, "
                f"peak {peaks[precision]} TFLOP/s)",
            )
        )
        del workflow, trainer
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows


def ddp_row(scratch: str, data: str, encoder: str, dry: bool) -> tuple:
    configs = (
        ["configs/train.json", "configs/cpu_toy.json", "configs/multi_gpu_train.json"]
        if dry
        else ["configs/train.json", "configs/multi_gpu_train.json"]
    )
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=1",
        "-m", "monai.bundle", "run", "--config_file", repr(configs), "--bundle_root", os.path.join(scratch, "ddp"),
        "--dataset_dir", data, "--text_encoder_name", encoder, "--max_epochs", "1", "--epoch_length", "2",
        "--val_interval", "1", "--num_workers", "0", "--batch_size", "2",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=PRETRAIN, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    seconds = time.perf_counter() - start
    backend = "gloo" if dry else "NCCL"
    if done.returncode:
        tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["?"]
        return (f"DDP smoke, 1 process, {backend}", "FAILED", f"exit {done.returncode}", tail[0][:120])
    checkpoint = os.path.join(scratch, "ddp", "models", "checkpoint_last.pt")
    return (
        f"DDP smoke, 1 process, {backend}",
        "passed",
        f"{seconds:.0f} s incl. start-up",
        f"checkpoint written: {os.path.isfile(checkpoint)}",
    )


def inference_row(scratch: str, dry: bool, device: str) -> tuple:
    import nibabel as nib
    import numpy as np
    from monai.networks.nets import SwinUNETR

    image = os.path.join(scratch, "inference_ct.nii.gz")
    feature_size = 12 if dry else 48
    if dry:
        source = nib.load(REAL_CT)
        crop = np.asarray(source.dataobj)[40:80, 30:70, 40:70]
        nib.save(nib.Nifti1Image(crop, source.affine), image)
    else:
        full_size_ct(image)
    torch.manual_seed(0)
    torch.save(
        SwinUNETR(in_channels=1, out_channels=14, feature_size=feature_size).state_dict(),
        os.path.join(scratch, "model.pt"),
    )
    overrides = {"network_def#feature_size": feature_size}
    result = run_side("lean", image, scratch, device, None, **overrides)
    shape = "x".join(str(n) for n in nib.load(image).shape)
    peak = (
        f"peak GPU {result['peak_gpu_gib']:.1f} GiB"
        if device.startswith("cuda")
        else f"peak RSS {result['peak_rss_gib']:.1f} GiB"
    )
    return (
        f"BTCV inference {shape}",
        f"{result['seconds']:.1f} s",
        peak,
        f"SwinUNETR fs{feature_size}, sw_batch_size {result['sw_batch_size']}, overlap 0.5",
    )


def main(dry: bool, steps: int, peak_bf16: float, peak_fp32: float) -> list:
    device = "cpu" if dry else "cuda"
    if not dry and not torch.cuda.is_available():
        sys.exit("gpu_check: expected a CUDA device, found none (use --dry to check the script on the CPU)")
    with tempfile.TemporaryDirectory() as scratch:
        data, encoder = _data(scratch, dry)
        rows = pretraining_rows(scratch, data, encoder, dry, device, steps, {"bf16": peak_bf16, "fp32": peak_fp32})
        rows.append(ddp_row(scratch, data, encoder, dry))
        rows.append(inference_row(scratch, dry, device))
    name = "CPU (--dry: toy sizes, numbers mean nothing)" if dry else torch.cuda.get_device_name(0)
    print(f"\n| check ({name}) | result | memory | notes |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry", action="store_true", help="CPU, toy sizes: checks the script, measures nothing")
    parser.add_argument("--steps", type=int, default=5, help="timed pre-training steps per precision")
    parser.add_argument("--peak_tflops_bf16", type=float, default=989.0)
    parser.add_argument("--peak_tflops_fp32", type=float, default=67.0)
    args = parser.parse_args()
    main(args.dry, 1 if args.dry else args.steps, args.peak_tflops_bf16, args.peak_tflops_fp32)
