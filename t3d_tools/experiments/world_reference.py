"""Reference numbers of the second synthetic world: what its pixels allow on the subtle findings (#26 item 2).

    python -m t3d_tools.experiments.world_reference --out results/world_v2

- **Ceiling**: a supervised classifier trained on all labels: the CPU toy's BasicUNet encoder (features 8-16-32,
  batch norm, the embedding level 2 the pre-training pools) with a linear head on mean- and max-pooled level-2
  features, trained on 32^3 crops centred on the body (study labels, ``crops_per_volume`` fresh crops per volume
  and epoch), scored per study by the mean logit over the tiles of a 32^3 grid covering the volume.
- **Floor**: the same encoder frozen at its random initialisation (same seed), the same pooled features averaged
  over the same tiles, and a linear probe (L2 logistic regression; strength chosen on validation).

Both are scored on the world's test split: per subtle finding and macro AUROC, with 95 % patient-level bootstrap
intervals (:func:`custom.evaluation.classification_metrics.bootstrap_ci`); the obvious findings are listed too.
The world is generated into ``<out>/work/world`` (ignored by git) with the arguments recorded in the result JSON.
The ceiling is a lower bound on what a better-trained network would reach: it is what this budget buys.
"""

from __future__ import annotations

import json
import os
import time

import nibabel as nib
import numpy as np
import torch
from tqdm import tqdm

from custom.data.synthetic_world import CLASSIFICATION_DATALIST, ensure_world
from custom.data.world_findings import SUBTLE_FINDINGS, WORLD_FINDINGS, sample_study
from custom.data.world_render import gaussian_blur
from custom.data.world_reports import same_findings_bigram_overlap, write_world_report
from custom.evaluation.classification_metrics import bootstrap_ci, roc_auc
from custom.networks.unet_backbone import BasicUNetBackbone

__all__ = ["run_reference"]

FEATURES = (8, 16, 32, 64, 64, 8)
CROP = 32
HU_WINDOW = (-1000.0, 1000.0)  # the pre-training bundle's preprocessing window


class _Encoder(torch.nn.Module):
    """Level-2 features of the BasicUNet encoder, mean- and max-pooled: ``(B, 1, D, H, W) -> (B, 2 * 32)``."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        backbone = BasicUNetBackbone(features=FEATURES, norm="batch", embedding_level=2)
        # channels-last (weights and inputs): CPU conv3d backward is ~8x faster in this layout at 8 channels
        self.blocks = torch.nn.Sequential(backbone.conv_0, backbone.down_1, backbone.down_2).to(
            memory_format=torch.channels_last_3d
        )
        self.width = 2 * FEATURES[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.blocks(x.contiguous(memory_format=torch.channels_last_3d))
        return torch.cat([features.mean(dim=(2, 3, 4)), features.amax(dim=(2, 3, 4))], dim=1)


def _load_split(world_dir: str, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    with open(os.path.join(world_dir, CLASSIFICATION_DATALIST), encoding="utf-8") as f:
        rows = json.load(f)[split]
    images = np.stack([np.asarray(nib.load(os.path.join(world_dir, r["image"])).dataobj, dtype=np.int16) for r in rows])
    labels = np.array([r["label"] for r in rows], dtype=np.float32)
    return images, labels, [r["patient_id"] for r in rows]


def _scaled(hu: np.ndarray) -> torch.Tensor:
    low, high = HU_WINDOW
    return torch.from_numpy(np.clip((hu.astype(np.float32) - low) / (high - low), 0.0, 1.0))


def _tile_starts(shape: tuple[int, ...]) -> list[tuple[int, int, int]]:
    axes = [np.linspace(0, n - CROP, max(1, int(np.ceil(n / CROP)))).round().astype(int) for n in shape]
    return [(int(a), int(b), int(c)) for a in axes[0] for b in axes[1] for c in axes[2]]


def _body_starts(image: np.ndarray, rng: np.random.Generator, count: int) -> list[tuple[int, int, int]]:
    """Corners of ``count`` crops centred on random body voxels (aerated lung included: blurred HU > -920)."""
    body = np.argwhere(gaussian_blur(image.astype(np.float32), 1.0) > -920.0)
    centres = body[rng.integers(len(body), size=count)]
    limit = np.array(image.shape) - CROP
    return [tuple(int(v) for v in np.clip(c - CROP // 2, 0, limit)) for c in centres]


def _crops(images: np.ndarray, starts_per_image: list[list[tuple[int, int, int]]]) -> torch.Tensor:
    crops = [
        images[i, a : a + CROP, b : b + CROP, c : c + CROP]
        for i, starts in enumerate(starts_per_image)
        for a, b, c in starts
    ]
    return _scaled(np.stack(crops))[:, None]


@torch.no_grad()
def _study_outputs(module: torch.nn.Module, images: np.ndarray, batch: int = 4) -> np.ndarray:
    """``module`` output per study, averaged over the 32^3 tiles covering each volume: ``(N, out)``."""
    module.eval()
    starts = _tile_starts(images.shape[1:])
    outputs = []
    for first in tqdm(range(0, len(images), batch), desc=f"embedding {len(images)} volumes", leave=False):
        chunk = images[first : first + batch]
        values = module(_crops(chunk, [starts] * len(chunk)))
        outputs.append(values.reshape(len(chunk), len(starts), -1).mean(dim=1))
    return torch.cat(outputs).numpy()


def _auroc_table(labels: np.ndarray, scores: np.ndarray, patients: list[str], n_bootstrap: int) -> dict:
    table = {}
    for index, name in enumerate(WORLD_FINDINGS):
        low, high = bootstrap_ci(labels[:, index], scores[:, index], roc_auc, n_bootstrap=n_bootstrap, groups=patients)
        table[name] = {
            "auroc": roc_auc(labels[:, index], scores[:, index]),
            "ci95": [low, high],
            "positives": int(labels[:, index].sum()),
        }
    subtle = [WORLD_FINDINGS.index(n) for n in SUBTLE_FINDINGS]

    def macro(y, s):
        return float(np.nanmean([roc_auc(y[:, c], s[:, c]) for c in range(y.shape[1])]))

    low, high = bootstrap_ci(labels[:, subtle], scores[:, subtle], macro, n_bootstrap=n_bootstrap, groups=patients)
    table["macro_subtle"] = {"auroc": macro(labels[:, subtle], scores[:, subtle]), "ci95": [low, high]}
    return table


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[torch.Tensor]:
    mean, std = train.mean(0), train.std(0) + 1e-6
    return [torch.from_numpy((a - mean) / std).float() for a in (train, *others)]


def _linear_probe(features: np.ndarray, labels: np.ndarray, l2: float) -> torch.nn.Linear:
    """L2 logistic regression per class (full-batch L-BFGS), on standardised features."""
    x, y = torch.from_numpy(features).float(), torch.from_numpy(labels)
    probe = torch.nn.Linear(x.shape[1], y.shape[1])
    optimizer = torch.optim.LBFGS(probe.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(probe(x), y) + l2 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return probe


def _macro_subtle(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(
        np.mean(
            [roc_auc(labels[:, WORLD_FINDINGS.index(n)], scores[:, WORLD_FINDINGS.index(n)]) for n in SUBTLE_FINDINGS]
        )
    )


def _floor(data: dict, seed: int, n_bootstrap: int) -> dict:
    encoder = _Encoder(seed)
    features = {split: _study_outputs(encoder, data[split][0]) for split in data}
    train, val, test = _standardise(features["training"], features["validation"], features["test"])
    grid = (1e-4, 1e-3, 1e-2, 1e-1)
    val_scores = {}
    for l2 in grid:
        probe = _linear_probe(train.numpy(), data["training"][1], l2)
        with torch.no_grad():
            val_scores[l2] = _macro_subtle(data["validation"][1], probe(val).numpy())
    best = max(grid, key=lambda l2: val_scores[l2])
    probe = _linear_probe(train.numpy(), data["training"][1], best)
    with torch.no_grad():
        scores = probe(test).numpy()
    return {
        "l2": best,
        "validation_macro_subtle_by_l2": {str(k): v for k, v in val_scores.items()},
        "test": _auroc_table(data["test"][1], scores, data["test"][2], n_bootstrap),
    }


def _ceiling(data: dict, seed: int, epochs: int, crops_per_volume: int, batch: int, lr: float, n_bootstrap: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(_Encoder(seed), torch.nn.Linear(2 * FEATURES[2], len(WORLD_FINDINGS)))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    images, labels, _ = data["training"]
    rng = np.random.default_rng(seed)
    history, best = [], (-1.0, None, 0)
    for epoch in range(1, epochs + 1):
        model.train()
        order = rng.permutation(len(images))
        losses = []
        for first in tqdm(range(0, len(order), batch), desc=f"ceiling epoch {epoch}/{epochs}", leave=False):
            chosen = order[first : first + batch]
            x = _crops(images[chosen], [_body_starts(images[i], rng, crops_per_volume) for i in chosen])
            y = torch.from_numpy(np.repeat(labels[chosen], crops_per_volume, axis=0))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        val = _macro_subtle(data["validation"][1], _study_outputs(model, data["validation"][0]))
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "validation_macro_subtle": val})
        print(f"ceiling epoch {epoch}: loss {np.mean(losses):.4f}, validation macro AUROC (subtle) {val:.3f}")
        if val > best[0]:
            best = (val, {k: v.clone() for k, v in model.state_dict().items()}, epoch)
    model.load_state_dict(best[1])
    scores = _study_outputs(model, data["test"][0])
    return {
        "epochs": epochs,
        "selected_epoch": best[2],
        "history": history,
        "test": _auroc_table(data["test"][1], scores, data["test"][2], n_bootstrap),
    }


def report_statistics(count: int = 1000, seed: int = 0) -> dict:
    """Word counts and same-findings bigram overlap of ``count`` seeded report draws (the test asserts < 0.5)."""
    rng = np.random.default_rng(seed)
    studies = [sample_study(rng) for _ in range(count)]
    reports = [write_world_report(s, rng) for s in studies]
    words = [len(r.split()) for r in reports]
    return {
        "reports": count,
        "seed": seed,
        "words": {"min": min(words), "mean": float(np.mean(words)), "max": max(words)},
        "same_findings_bigram_overlap": same_findings_bigram_overlap(reports, [s.label_vector() for s in studies]),
    }


def run_reference(
    out: str = "results/world_v2",
    num_train: int = 600,
    num_val: int = 64,
    num_test: int = 256,
    shape: tuple[int, int, int] = (64, 64, 64),
    spacing: tuple[float, float, float] = (7.0, 7.0, 7.0),
    world_seed: int = 0,
    seed: int = 0,
    epochs: int = 5,
    crops_per_volume: int = 1,
    batch: int = 16,
    lr: float = 3e-3,
    n_bootstrap: int = 1000,
    threads: int = 2,
    reports_only: bool = False,
) -> str:
    """Generate the world, compute floor and ceiling, write ``<out>/reference.json``; returns its path.

    ``reports_only``: write only the report statistics (:func:`report_statistics`) to ``<out>/reports.json``."""
    if reports_only:
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, "reports.json")
        command = f"python -m t3d_tools.experiments.world_reference --out {out} --reports_only"
        with open(path, "w", encoding="utf-8") as f:
            json.dump({**report_statistics(), "command": command}, f, indent=1)
        return path
    torch.set_num_threads(int(threads))
    started = time.time()
    world_dir = os.path.join(out, "work", "world")
    world_args = {
        "num_train": num_train,
        "num_val": num_val,
        "num_test": num_test,
        "shape": list(shape),
        "spacing": list(spacing),
        "seed": world_seed,
    }
    already = os.path.isfile(os.path.join(world_dir, CLASSIFICATION_DATALIST))
    ensure_world(world_dir, **world_args)
    generated = time.time()
    reports = report_statistics()
    print(f"reports: {reports}")
    data = {split: _load_split(world_dir, split) for split in ("training", "validation", "test")}
    floor = _floor(data, seed, n_bootstrap)
    floored = time.time()
    print(f"floor (random frozen encoder + linear probe): test macro AUROC (subtle) {floor['test']['macro_subtle']}")
    ceiling = _ceiling(data, seed, epochs, crops_per_volume, batch, lr, n_bootstrap)
    print(f"ceiling (supervised): test macro AUROC (subtle) {ceiling['test']['macro_subtle']}")
    result = {
        "world": world_args,
        "subtle_findings": list(SUBTLE_FINDINGS),
        "encoder": {"class": "BasicUNetBackbone", "features": list(FEATURES), "norm": "batch", "embedding_level": 2},
        "crop": CROP,
        "hu_window": list(HU_WINDOW),
        "metric": "test-split AUROC, 95 % percentile interval of a patient-level bootstrap",
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "training": {"epochs": epochs, "crops_per_volume": crops_per_volume, "batch": batch, "lr": lr},
        "reports": reports,
        "floor": floor,
        "ceiling": ceiling,
        "wall_seconds": {
            "generate": None if already else round(generated - started, 1),
            "floor": round(floored - generated, 1),
            "ceiling": round(time.time() - floored, 1),
        },
        "threads": threads,
        "command": "python -m t3d_tools.experiments.world_reference --out " + out,
    }
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "reference.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    return path


if __name__ == "__main__":
    import fire

    fire.Fire(run_reference)
