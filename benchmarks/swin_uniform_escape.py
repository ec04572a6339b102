"""Does the SwinUNETR path leave TCL's uniform fixed point? Crop-embedding cosine before and after training, at CPU
size, with the shipped configs changed in size keys only (``learning_check.PATHS["swin"]``).

    python benchmarks/swin_uniform_escape.py --steps 40 [--root DIR] [--out FILE]

At initialisation every crop's embedding points the same way (mean cosine between crops of *different* volumes
near 1: the issue measured 0.992 at fs48), so TCL's logits barely differ and its targets look uniform. The script
builds the Swin path's trainer from the bundle configs (``train.json`` + ``cpu_size.json`` + ``cpu_size_swin.json``,
a smaller world and batch through size keys only), embeds a fixed set of validation crops (the evaluation crops of
each volume, ``eval_grid``), trains ``--steps`` steps, embeds them again, and prints the mean cosine between crops of
different volumes and between crops of the same volume, before and after, and the TCL loss of the first and last
steps against its uniform value. ``--text_encoder`` reuses a built offline text encoder (its folder).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
BUNDLE = os.path.join(REPO, "bundles", "t3d_pretrain")


def crop_cosines(network: torch.nn.Module, loader) -> dict[str, float]:
    """Mean cosine between embeddings of crops of different volumes and of the same volume (eval mode, no grad)."""
    network.eval()
    embeddings, pooled, owners = [], [], []
    hook = network.image_head.projection.register_forward_pre_hook(lambda _, args: pooled.append(args[0].float()))
    with torch.no_grad():
        for index, batch in enumerate(loader):
            crops = batch["image"].flatten(0, 1).float()  # (B*K, 1, *S)
            embeddings.append(network.embed_images(crops).float())
            owners += [index] * crops.shape[0]
    hook.remove()
    network.train()
    owner = torch.tensor(owners)
    same = owner[:, None] == owner[None, :]
    off_diagonal = ~torch.eye(len(owners), dtype=torch.bool)
    result = {"crops": len(owners)}
    for name, rows in (("embedding", embeddings), ("pooled_features", pooled)):
        vectors = torch.nn.functional.normalize(torch.cat(rows), dim=-1)
        cosine = vectors @ vectors.T
        result[name] = {"different_volumes": float(cosine[~same].mean()),
                        "same_volume": float(cosine[same & off_diagonal].mean())}  # fmt: skip
    return result


def _print(when: str, cosines: dict) -> None:
    for name in ("pooled_features", "embedding"):
        c = cosines[name]
        print(f"{when}: {name}: mean cosine between crops of different volumes {c['different_volumes']:.4f}, "
              f"of the same volume {c['same_volume']:.4f} ({cosines['crops']} crops)", flush=True)  # fmt: skip


def main(steps: int, root: str | None, text_encoder: str | None, out: str | None) -> dict:
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    from t3d_tools.experiments.learning_check import PATHS

    root = root or tempfile.mkdtemp(prefix="t3d_swin_escape_")
    overrides = {
        "batch_size": 2, "max_epochs": 1, "epoch_length": steps, "val_interval": 1,
        "prepare_data#world#num_train": 48, "prepare_data#world#num_val": 4, "prepare_data#world#num_test": 0,
    }  # fmt: skip
    if text_encoder:
        overrides["offline_text_encoder_dir"] = text_encoder
    torch.manual_seed(0)
    workflow = ConfigWorkflow(
        config_file=[os.path.join(BUNDLE, "configs", c) for c in PATHS["swin"]], workflow_type=None,
        bundle_root=root, **overrides,
    )  # fmt: skip
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    loader = workflow.parser.get_parsed_content("validate#dataloader")
    network = trainer.network
    before = crop_cosines(network, loader)
    _print("before", before)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: print(f"step {e.state.iteration}", flush=True))
    trainer.run()
    after = crop_cosines(network, loader)
    with open(os.path.join(root, "runs", "loss_history.json"), encoding="utf-8") as f:
        tcl = json.load(f)["tcl"]
    per_volume = workflow.parser["crops_per_volume"]
    uniform = 0.5 * (np.log(2) + np.log(2 * per_volume))  # B = 2 reports, B*K crops
    _print(f"after {steps} steps", after)
    print(f"TCL first {tcl[0]:.3f}, mean of the last five {np.mean(tcl[-5:]):.3f} (uniform targets: {uniform:.3f})")
    result = {"steps": steps, "before": before, "after": after, "tcl": tcl, "overrides": overrides}
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--root", default=None)
    parser.add_argument("--text_encoder", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    main(args.steps, args.root, args.text_encoder, args.out)
