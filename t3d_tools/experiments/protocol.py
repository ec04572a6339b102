"""What the paper table runs: its rows (pre-training methods and T3D ablations), its downstream bundles and metric
columns, the two scales (``toy``: CPU, synthetic data; ``full``: the real configs and data), and the plan of runs.

A *row* is one pre-training (or none, for scratch); a *run* is one fine-tune of one bundle from one row's weights at
one label fraction with one seed. Every run of a row starts from the same pre-trained weights; the seed picks the
labelled subset (nested, patient-level: ``custom.data.label_fractions``), the initialisation of the new layers and the
crops.
"""

from __future__ import annotations

import glob
import os
from dataclasses import asdict, dataclass, field

from t3d_tools import REPO_ROOT

__all__ = [
    "BUNDLES_DIR",
    "PRETRAIN_BUNDLE",
    "Row",
    "Bundle",
    "Column",
    "COLUMNS",
    "SCALES",
    "Run",
    "discover_rows",
    "discover_bundles",
    "build_plan",
]

BUNDLES_DIR = os.path.join(REPO_ROOT, "bundles")
PRETRAIN_BUNDLE = "t3d_pretrain"


@dataclass(frozen=True)
class Row:
    """One row of the table. ``overlays``: pre-training config files stacked on ``train.json`` (and ``cpu_toy.json``
    at toy scale); ``pretrain`` False for scratch; ``toy_overrides`` replace the overlays at toy scale where the
    overlay cannot run offline on a CPU (``toy_note`` says what stands in); ``skip`` (scale -> reason) leaves the row
    out at that scale, logged and footnoted."""

    name: str
    label: str
    overlays: tuple[str, ...] = ()
    pretrain: bool = True
    toy_overrides: dict | None = None
    toy_note: str = ""
    skip: dict = field(default_factory=dict)


#: rows in table order; ablation rows follow, one per ``configs/ablation_*.json`` present
BASE_ROWS: tuple[Row, ...] = (
    Row("scratch", "Scratch (no pre-training)", pretrain=False),
    Row("ssl_swin", "Image-only SSL (SwinUNETR SSL: rotation + contrast + inpainting)", ("method_ssl_swin.json",)),
    Row("restoration_only", "Restoration only (Models Genesis style)", ("method_restoration_only.json",)),
    Row("t3d", "T3D (TCL + TIR + interactor)"),
)
ABLATION_LABELS: dict[str, str] = {
    "no_tcl": "T3D w/o TCL",
    "no_tir": "T3D w/o TIR",
    "no_interactor": "T3D w/o interactor",
    "unet_backbone": "T3D, UNet backbone",
    "clinicalbert": "T3D, ClinicalBERT text encoder",
}
#: per ablation, what the toy scale does instead of stacking the overlay (see ``Row``)
TOY_ABLATION = {
    "unet_backbone": {
        "skip": "the CPU toy backbone already is the UNet (BasicUNet); the SwinUNETR-vs-UNet comparison needs the "
        "full scale (a toy SwinUNETR costs ~3.7 s per 64^3 crop here, far beyond the toy budget)"
    },
    "clinicalbert": {
        "overrides": {
            "offline_text_encoder_dir": "{work}/text_encoder_weak",
            "prepare_data#offline_text_encoder#mlm_steps": 20,
        },
        "note": "toy stand-in for ClinicalBERT: the same local BERT with 20 instead of 300 masked-LM steps on the "
        "report corpus (less in-domain text pre-training); no ClinicalBERT weights exist offline",
    },
}


@dataclass(frozen=True)
class Bundle:
    """A downstream bundle. ``toy_miniature``: whether its CPU toy writes a miniature data set
    (``prepare_data#miniature``, whose case count the toy scale sets); ``metrics``: result keys a complete run must
    have."""

    name: str
    label: str
    metrics: tuple[str, ...]
    task: str = "segmentation"
    toy_miniature: bool = False


BUNDLES: tuple[Bundle, ...] = (
    Bundle("t3d_btcv_seg", "BTCV", ("mean_dice",), toy_miniature=True),
    Bundle("t3d_msd_lung", "MSD lung", ("mean_dice",), toy_miniature=True),
    Bundle("t3d_brats", "BraTS", ("mean_dice", "tc", "wt", "et"), toy_miniature=True),
    Bundle("t3d_bimcv_cls", "BIMCV classification", ("macro_auroc",), task="classification"),
)


@dataclass(frozen=True)
class Column:
    label: str
    bundle: str
    metric: str


COLUMNS: tuple[Column, ...] = (
    Column("BTCV mean Dice", "t3d_btcv_seg", "mean_dice"),
    Column("Lung tumour Dice", "t3d_msd_lung", "mean_dice"),
    Column("BraTS TC Dice", "t3d_brats", "tc"),
    Column("BraTS WT Dice", "t3d_brats", "wt"),
    Column("BraTS ET Dice", "t3d_brats", "et"),
    Column("Classification macro AUROC", "t3d_bimcv_cls", "macro_auroc"),
)

#: budgets per scale. Toy: equal for every row (same pre-training steps and crops, same fine-tune iterations).
SCALES: dict[str, dict] = {
    "toy": {
        "pretrain_configs": ("train.json", "cpu_toy.json"),
        "finetune_configs": ("train.json", "cpu_toy.json"),
        # cpu_toy: 480 training volumes, batch 16 x 1 crop of 32^3 -> 30 steps an epoch; 2 epochs = 60 steps
        "pretrain_overrides": {"max_epochs": 2, "val_interval": 2, "seed": 0},
        "finetune_iterations": 30,
        "miniature_cases": 30,
        "seeds": 3,
        "fractions": (0.01, 0.1, 1.0),
    },
    "full": {
        "pretrain_configs": ("train.json",),
        "finetune_configs": ("train.json",),
        "pretrain_overrides": {"seed": 0},
        "finetune_iterations": None,  # the bundles' own schedules
        "miniature_cases": None,
        "seeds": 3,
        "fractions": (0.01, 0.1, 1.0),
    },
}


@dataclass(frozen=True)
class Run:
    row: str
    bundle: str
    fraction: float
    seed: int

    @property
    def run_id(self) -> str:
        return f"{self.row}__{self.bundle}__frac{self.fraction * 100:g}__seed{self.seed}"

    def to_dict(self) -> dict:
        return {**asdict(self), "run_id": self.run_id}


def discover_rows(scale: str, bundles_dir: str = BUNDLES_DIR) -> tuple[list[Row], dict[str, str]]:
    """Rows to run at ``scale`` (base rows + one per ``ablation_*.json``) and ``{row: reason}`` of rows left out."""
    rows = list(BASE_ROWS)
    config_dir = os.path.join(bundles_dir, PRETRAIN_BUNDLE, "configs")
    for path in sorted(glob.glob(os.path.join(config_dir, "ablation_*.json"))):
        name = os.path.basename(path)[len("ablation_") : -len(".json")]
        toy = TOY_ABLATION.get(name, {})
        rows.append(
            Row(
                name,
                ABLATION_LABELS.get(name, f"T3D ablation {name}"),
                (os.path.basename(path),),
                toy_overrides=toy.get("overrides"),
                toy_note=toy.get("note", ""),
                skip={"toy": toy["skip"]} if "skip" in toy else {},
            )
        )
    kept = [r for r in rows if scale not in r.skip]
    skipped = {r.name: r.skip[scale] for r in rows if scale in r.skip}
    return kept, skipped


def discover_bundles(bundles_dir: str = BUNDLES_DIR) -> tuple[list[Bundle], dict[str, str]]:
    """Downstream bundles present (with ``configs/train.json``) and ``{bundle: reason}`` of those absent."""
    present, absent = [], {}
    for bundle in BUNDLES:
        train = os.path.join(bundles_dir, bundle.name, "configs", "train.json")
        if os.path.isfile(train):
            present.append(bundle)
        else:
            absent[bundle.name] = f"bundles/{bundle.name}/configs/train.json not found (bundle not in this tree)"
    return present, absent


def build_plan(
    scale: str,
    seeds: int | None = None,
    fractions: list[float] | None = None,
    rows: list[str] | None = None,
    bundles: list[str] | None = None,
    bundles_dir: str = BUNDLES_DIR,
) -> dict:
    """The whole protocol at ``scale`` as plain data: rows, bundles, runs, and what was left out and why.
    ``rows`` / ``bundles`` / ``fractions`` restrict it (default: everything the scale runs)."""
    if scale not in SCALES:
        raise ValueError(f"scale: expected one of {sorted(SCALES)}, found {scale!r}")
    spec = SCALES[scale]
    all_rows, skipped_rows = discover_rows(scale, bundles_dir)
    all_bundles, skipped_bundles = discover_bundles(bundles_dir)
    unknown = set(rows or ()) - {r.name for r in all_rows} | set(bundles or ()) - {b.name for b in all_bundles}
    if unknown:
        raise ValueError(
            f"rows/bundles: {sorted(unknown)} not in the {scale} plan (rows {[r.name for r in all_rows]}, "
            f"bundles {[b.name for b in all_bundles]})"
        )
    chosen_rows = [r for r in all_rows if not rows or r.name in rows]
    chosen_bundles = [b for b in all_bundles if not bundles or b.name in bundles]
    fractions = [float(f) for f in (fractions or spec["fractions"])]
    seeds = spec["seeds"] if seeds is None else int(seeds)
    if seeds < 1 or not all(0 < f <= 1 for f in fractions):
        raise ValueError(f"expected seeds >= 1 and fractions in (0, 1], found {seeds}, {fractions}")
    runs = [
        Run(row.name, bundle.name, fraction, seed)
        for row in chosen_rows
        for bundle in chosen_bundles
        for fraction in fractions
        for seed in range(seeds)
    ]
    return {
        "scale": scale,
        "seeds": seeds,
        "fractions": fractions,
        "rows": [
            {"name": r.name, "label": r.label, "pretrain": r.pretrain, "note": r.toy_note if scale == "toy" else ""}
            for r in chosen_rows
        ],
        "bundles": [{"name": b.name, "label": b.label, "metrics": list(b.metrics)} for b in chosen_bundles],
        "skipped_rows": skipped_rows,
        "skipped_bundles": skipped_bundles,
        "runs": [r.to_dict() for r in runs],
    }


def row_by_name(name: str, scale: str, bundles_dir: str = BUNDLES_DIR) -> Row:
    rows, _ = discover_rows(scale, bundles_dir)
    for row in rows:
        if row.name == name:
            return row
    raise KeyError(f"row {name!r} is not part of the {scale} plan")


def bundle_by_name(name: str) -> Bundle:
    return next(b for b in BUNDLES if b.name == name)
