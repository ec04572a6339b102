"""Peak memory of one paper-size ``train.json`` step (SwinUNETR fs48, 96^3 crops, K = 4), measured on this machine,
with gradient checkpointing on and off, and the GPU estimate that follows from the measured activation memory.

    python benchmarks/pretrain_memory.py [--points_on 1x1 1x2] [--points_off 1x1] [--gpu_gib 80] [--out FILE]

Each point ``BxK`` (volumes x crops per volume) runs in a fresh process: it builds ``train.json`` (the real config:
fs48, 96^3 crops, the interactor, a BERT-base-size report encoder with random weights built offline and its first 6
layers frozen, as ``text_frozen_layers: 6``), draws one batch from the bundle's own loader, and runs one training
step (forward, backward, AdamW) in float32 on the CPU. It prints the resident memory before the step and the process's
peak during it.

One step holds, beyond the model: gradients and AdamW's two moments (3 x the trainable parameters, allocated by the
first step) and the activations of ``2 * B * K`` encoder passes (clean + corrupted crops) and ``B * K`` decoder
passes. The activation memory per crop is the step's extra memory less those states, over ``B * K``; the K = 4 rows
are extrapolated from the largest measured point (this machine's 24 GB holds one paper-size crop without
checkpointing, two with it), and the table shows whether the measured points agree per crop.

GPU estimate: the paper-size run uses bf16 autocast, which stores most saved activations in 2 bytes instead of 4;
the estimate takes the fp32 activation slope times ``--bf16_activation_factor`` (0.5 by default: an upper bound is
1.0, stated next to it), plus the fp32 weights, gradients and AdamW states, plus a CUDA context of about 1 GiB. The
largest ``B x K`` under ``--gpu_gib`` follows. Measured numbers are RSS on the CPU: the allocator differs on a GPU,
so read the GPU column as an estimate, which a lent GPU checks (``benchmarks/gpu_check.sh`` prints its peak).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
BUNDLE = os.path.join(REPO, "bundles", "t3d_pretrain")
GIB = 1024**3


def _child(data: str, text: str, batch: int, crops: int, checkpoint: bool) -> dict:
    """One training step of ``train.json`` at ``batch`` x ``crops``; returns memory figures in bytes."""
    import resource

    import psutil
    import torch
    from monai.bundle import ConfigWorkflow

    torch.manual_seed(0)
    workflow = ConfigWorkflow(
        config_file=[os.path.join(BUNDLE, "configs", "train.json")], workflow_type=None,
        bundle_root=tempfile.mkdtemp(), dataset_dir=data, text_encoder_name=text, num_workers=0,
        device="$torch.device('cpu')", amp=False, batch_size=batch, crops_per_volume=crops,
        **{"image_backbone#use_checkpoint": checkpoint},
    )  # fmt: skip
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    batch_data = next(iter(trainer.data_loader))
    network = trainer.network
    trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
    total = sum(p.numel() for p in network.parameters())
    before = psutil.Process().memory_info().rss
    trainer._iteration(trainer, batch_data)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return {
        "batch": batch, "crops_per_volume": crops, "checkpoint": checkpoint, "rss_before_step": before,
        "peak_rss": peak, "step_extra": peak - before, "parameters": total, "trainable_parameters": trainable,
    }  # fmt: skip


def _measure(point: str, checkpoint: bool, data: str, text: str) -> dict:
    batch, crops = (int(v) for v in point.split("x"))
    command = [sys.executable, __file__, "--child", point, "--data", data, "--text", text]
    command += ["--checkpoint"] if checkpoint else []
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise RuntimeError(f"point {point} (checkpoint {checkpoint}) failed: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _per_crop(row: dict) -> float:
    """Activation bytes per crop of one measured step: its extra memory less the fp32 gradients and AdamW moments
    (3 x the trainable parameters, which the first step allocates), over the ``B * K`` crops it encoded."""
    state = 4 * 3 * row["trainable_parameters"]
    return (row["step_extra"] - state) / (row["batch"] * row["crops_per_volume"])


def main(points_on: list[str], points_off: list[str], gpu_gib: float, bf16_factor: float, out: str | None) -> dict:
    from custom.data.make_synthetic_pairs import make_synthetic_pairs
    from custom.weights.offline_text_encoder import build_offline_text_encoder

    scratch = tempfile.mkdtemp(prefix="t3d_memory_")
    data = os.path.join(scratch, "data")
    make_synthetic_pairs(data, num_train=4, num_val=2, shape=(160, 160, 128), spacing=(1.5, 1.5, 2.0), seed=0)
    text = build_offline_text_encoder(
        os.path.join(scratch, "base_text"), hidden_size=768, num_layers=12, num_heads=12, max_position_embeddings=512,
        vocab_size=8000, mlm_steps=0,
    )  # fmt: skip
    result: dict = {"gpu_gib": gpu_gib, "bf16_activation_factor": bf16_factor, "modes": {}}
    for checkpoint, points in ((True, points_on), (False, points_off)):
        rows = [_measure(p, checkpoint, data, text) for p in points]
        mode = "checkpointing on" if checkpoint else "checkpointing off"
        print(f"\n{mode}: one train.json step, fp32 on this CPU (measured)")
        print("| B x K | RSS before step | peak RSS | step extra | activations per crop |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['batch']} x {r['crops_per_volume']} | {r['rss_before_step'] / GIB:.2f} GiB | "
                f"{r['peak_rss'] / GIB:.2f} GiB | {r['step_extra'] / GIB:.2f} GiB | {_per_crop(r) / GIB:.2f} GiB |"
            )
        largest_row = max(rows, key=lambda r: r["batch"] * r["crops_per_volume"])
        per_crop = _per_crop(largest_row)
        state = 4 * 3 * largest_row["trainable_parameters"]
        base = largest_row["rss_before_step"]
        k4 = {f"{b} x 4": base + state + per_crop * b * 4 for b in (1, 2)}
        print(f"K = 4, from {per_crop / GIB:.2f} GiB per crop (extrapolated where not in the table):")
        for name, value in k4.items():
            print(f"  {name}: peak RSS {value / GIB:.1f} GiB")
        gpu_per_crop = per_crop * bf16_factor
        fixed = 4 * (largest_row["parameters"] + 3 * largest_row["trainable_parameters"]) + GIB  # + CUDA context
        largest = {k: int((gpu_gib * GIB - fixed) // (gpu_per_crop * k)) for k in (1, 2, 4, 8)}
        print(
            f"GPU estimate ({gpu_gib:.0f} GB, bf16 activations x{bf16_factor}): {fixed / GIB:.1f} GiB fixed + "
            f"{gpu_per_crop / GIB:.2f} GiB per crop; largest batch per GPU at each K: "
            + ", ".join(f"K={k}: B<={b}" for k, b in largest.items())
        )
        result["modes"][mode] = {
            "rows": rows, "activation_bytes_per_crop_fp32": per_crop, "k4_peak_rss_bytes": k4,
            "gpu_fixed_bytes": fixed, "gpu_bytes_per_crop": gpu_per_crop, "gpu_largest_batch_per_k": largest,
        }  # fmt: skip
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points_on", nargs="+", default=["1x1", "1x2"], help="B x K points, checkpointing on")
    parser.add_argument("--points_off", nargs="+", default=["1x1"], help="B x K points, checkpointing off")
    parser.add_argument("--gpu_gib", type=float, default=80.0)
    parser.add_argument("--bf16_activation_factor", type=float, default=0.5)
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--text", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        b, k = (int(v) for v in args.child.split("x"))
        print(json.dumps(_child(args.data, args.text, b, k, args.checkpoint)))
    else:
        main(args.points_on, args.points_off, args.gpu_gib, args.bf16_activation_factor, args.out)
