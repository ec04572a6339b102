"""Why sub-volume TCL does or does not leave its uniform start: a TCL-only loop over crop-sampling and text variants.

Builds the network, data, report affinity and TCL loss from ``t3d_pretrain``'s configs (``train.json`` +
``cpu_toy.json`` + ``cpu_toy_subvolume.json``, so it needs that overlay's data: run the bundle once, or let this
script's ``initialize`` make it), then trains the image tower and both projection heads on TCL alone (no TIR, no
interactor: four times cheaper a step) and prints every ``--every`` steps:

- ``tcl``: the mean TCL of the last steps, next to its uniform value ``0.5 * (ln B + ln(B*K))`` (every crop alike);
- held-out report->volume ``R@1`` / ``R@5`` over the validation studies, a volume's embedding being the mean of its
  ``eval_grid``\\ ^3 grid crops (as the bundle's evaluator does), and how often the top-1 volume has the report's
  finding labels (``same-labels``);
- ``crop-cos``: the mean cosine between validation crop embeddings (1.0 = collapsed).

Variants (the model card's "Sub-volume TCL on the CPU" table was measured with them)::

    python benchmarks/subvolume_tcl_diagnostics.py --sampling independent --crops 2 --batch 16
    python benchmarks/subvolume_tcl_diagnostics.py --sampling stratified --jitter 2 --crops 8 --batch 4
    python benchmarks/subvolume_tcl_diagnostics.py --sampling stratified --crops 8 --batch 4 --text labels
    python benchmarks/subvolume_tcl_diagnostics.py --whole --text impression

``--sampling grid`` trains on the fixed evaluation grid; ``--whole`` uses one crop that is the whole volume (the
README demo's K = 1); ``--text labels`` replaces the report by a learned embedding of its finding-label vector (a
perfect text tower: whatever still fails is the image side), ``--text impression`` encodes the IMPRESSION only.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import time

import numpy as np
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from monai.utils import set_determinism

from custom.data.pairs import PairsDataset
from custom.losses.tcl import TextInformedContrastiveLoss

BUNDLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bundles", "t3d_pretrain")
CONFIGS = ["configs/train.json", "configs/cpu_toy.json", "configs/cpu_toy_subvolume.json"]


def _impression(report: str) -> str:
    found = re.search(r"IMPRESSION:(.*)$", report, re.S)
    return found.group(1).strip() if found else report


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--sampling", choices=["stratified", "independent", "grid"], default="stratified")
    cli.add_argument(
        "--jitter",
        type=int,
        default=None,
        help="stratified: voxels from the cell centre (default: anywhere in the cell)",
    )
    cli.add_argument("--crops", type=int, default=8, help="K crops per volume")
    cli.add_argument("--batch", type=int, default=4, help="volumes per step")
    cli.add_argument("--whole", action="store_true", help="one crop = the whole volume (K = 1)")
    cli.add_argument("--text", choices=["report", "impression", "labels"], default="report")
    cli.add_argument("--steps", type=int, default=1500)
    cli.add_argument("--every", type=int, default=250)
    cli.add_argument("--seed", type=int, default=0)
    args = cli.parse_args()

    os.chdir(BUNDLE)
    parser = ConfigParser()
    parser.read_config(CONFIGS)
    parser["bundle_root"] = BUNDLE
    if args.whole:
        parser["crop_size"], args.crops, args.sampling = [32, 32, 32], 1, "grid"
    set_determinism(args.seed)
    parser.get_parsed_content("prepare_data")  # makes the overlay's data and offline text encoder when missing
    network = parser.get_parsed_content("network_def")
    train_rows, val_rows = parser.get_parsed_content("train#rows"), parser.get_parsed_content("validate#rows")
    if args.text == "impression":
        for row in train_rows + val_rows:
            row["report"] = _impression(row["report"])
    network.prepare_text([row["report"] for row in train_rows])
    loss_function = TextInformedContrastiveLoss(
        parser.get_parsed_content("tcl_loss#affinity"), embed_reports=network.report_vectors
    )
    loss_function.prepare(train_rows)

    if args.text != "labels":
        embed_reports = network.embed_reports
    else:
        label_of = {
            row["report"]: torch.tensor(row["label_vector"], dtype=torch.float32) for row in train_rows + val_rows
        }
        width = len(next(iter(label_of.values())))
        label_tower = torch.nn.Sequential(
            torch.nn.Linear(width, 64),
            torch.nn.GELU(),
            torch.nn.Linear(64, int(parser.get_parsed_content("embed_dim"))),
        )
        network.add_module("label_tower", label_tower)

        def embed_reports(reports: list[str]) -> torch.Tensor:
            return F.normalize(label_tower(torch.stack([label_of[r] for r in reports])), dim=-1)

    cache = parser.get_parsed_content("volume_cache")
    crop_size = parser.get_parsed_content("crop_size")
    grid = 1 if args.whole else int(parser.get_parsed_content("eval_grid"))
    train_set = PairsDataset(
        train_rows,
        cache,
        crop_size,
        args.crops,
        eval_grid=grid if args.sampling == "grid" else None,
        sampling="independent" if args.sampling == "independent" else "stratified",
        crop_jitter=args.jitter,
    )
    val_set = PairsDataset(val_rows, cache, crop_size, eval_grid=grid)
    loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch, shuffle=True, drop_last=True)
    trained = [
        p
        for n, p in network.named_parameters()
        if p.requires_grad and not n.startswith(("interactor", "image_backbone.decoder"))
    ]
    optimizer = torch.optim.AdamW(trained, lr=float(parser.get_parsed_content("learning_rate")), weight_decay=0.01)
    warmup = max(1, int(0.05 * args.steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)),
    )
    per_step = args.batch * (len(val_set[0]["image"]) if args.sampling == "grid" else args.crops)
    uniform = 0.5 * (math.log(args.batch) + math.log(per_step))
    labels = torch.tensor(np.asarray([row["label_vector"] for row in val_rows]))

    def evaluate() -> tuple[float, float, float, float]:
        network.eval()
        with torch.no_grad():
            crops = [network.embed_images(val_set[i]["image"].float()) for i in range(len(val_set))]
            volumes = torch.stack([F.normalize(c.mean(0), dim=-1) for c in crops])
            similarity = embed_reports([row["report"] for row in val_rows]) @ volumes.T
            ranks = (similarity >= similarity.diagonal()[:, None]).sum(1)
            same = (labels[similarity.argmax(1)] == labels).all(1).float().mean()
            every_crop = torch.cat(crops)
            crop_cos = (every_crop @ every_crop.T).mean()
        network.train()
        return float((ranks <= 1).float().mean()), float((ranks <= 5).float().mean()), float(same), float(crop_cos)

    print(f"{vars(args)}; chance R@1 {1 / len(val_rows):.3f} R@5 {5 / len(val_rows):.3f}; uniform TCL {uniform:.3f}")
    network.train()
    step, history, start = 0, [], time.time()
    while step < args.steps:
        for batch in loader:
            crops = batch["image"].float().flatten(0, 1)
            crop_to_report = torch.arange(args.batch).repeat_interleave(crops.shape[0] // args.batch)
            loss = loss_function(
                network.embed_images(crops),
                embed_reports(list(batch["report"])),
                crop_to_report,
                network.logit_scale.exp(),
                **{key: batch[key] for key in loss_function.required_batch_keys},
            )["loss"]
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            optimizer.step()
            network.clamp_logit_scale_()
            schedule.step()
            history.append(float(loss.detach()))
            step += 1
            if step % args.every == 0 or step == args.steps:
                r1, r5, same, crop_cos = evaluate()
                print(
                    f"step {step} tcl {np.mean(history[-args.every :]):.3f} (uniform {uniform:.3f}) R@1 {r1:.3f} "
                    f"R@5 {r5:.3f} same-labels {same:.3f} crop-cos {crop_cos:.3f} {time.time() - start:.0f} s",
                    flush=True,
                )
            if step >= args.steps:
                break


if __name__ == "__main__":
    main()
