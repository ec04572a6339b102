"""What the paper table runs: its rows (pre-training methods and T3D ablations), its downstream bundles and metric
columns, the two scales (``toy``: CPU, synthetic data; ``full``: the real configs and data), and the plan of runs.

A *row* is one pre-training method (or none, for scratch), pre-trained once per *pre-training seed*; a *run* is one
downstream training of one bundle from one of those pre-trainings, in one *mode* (``finetune``: every weight trains;
``probe``: the transferred encoder is frozen, a linear head on pooled features for classification, the decoder for
segmentation), at one label fraction, with one *fine-tuning seed*. The fine-tuning seed picks the labelled subset
(nested, patient-level: ``custom.data.label_fractions``), the initialisation of the new layers and the crops, so the
runs of two rows with the same fine-tuning seed are paired.

Protocol 2 scores every run on a labelled, patient-disjoint ``test`` split (``custom.data.test_split``) with the
checkpoint chosen on ``validation``. Each column has a *floor* that scratch fine-tuned on 100 % of the labels must
clear for the column to take part in the verdict.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
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
    "MODES",
    "PAIRS",
    "SCALES",
    "Run",
    "discover_rows",
    "discover_bundles",
    "build_plan",
    "PROTOCOL_V3",
    "load_protocol",
    "plan_sha256",
    "build_registered_plan",
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
#: control rows (#27), scheduled by the registered protocol (``protocol_v3.json``), never by a plain protocol-2 plan:
#: T3D with oracle text from the labels (positive control) and with reports shuffled across studies (negative)
CONTROL_ROWS: tuple[Row, ...] = (
    Row("oracle_text", "Positive control: T3D, reports replaced by oracle text from the labels",
        ("control_oracle_text.json",)),
    Row("shuffled_reports", "Negative control: T3D, reports shuffled across studies",
        ("control_shuffled_reports.json",)),
)  # fmt: skip
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
    have; ``test_source``: where its held-out test patients come from (``custom.data.test_split``)."""

    name: str
    label: str
    metrics: tuple[str, ...]
    task: str = "segmentation"
    toy_miniature: bool = False
    test_source: str = "training"


BUNDLES: tuple[Bundle, ...] = (
    Bundle("t3d_btcv_seg", "BTCV", ("mean_dice",), toy_miniature=True),
    Bundle("t3d_msd_lung", "MSD lung", ("mean_dice",), toy_miniature=True),
    Bundle("t3d_brats", "BraTS", ("mean_dice", "tc", "wt", "et"), toy_miniature=True),
    # the classifier's studies are the pre-training pairs: only their validation studies were never pre-trained on
    Bundle("t3d_bimcv_cls", "BIMCV classification", ("macro_auroc",), task="classification", test_source="validation"),
)


@dataclass(frozen=True)
class Column:
    """One metric column. ``floor``: what scratch fine-tuned on 100 % of the labels must reach for the column to
    separate rows at all (well above trivial: an empty mask or chance AUROC); below it the column is *at floor*."""

    label: str
    bundle: str
    metric: str
    floor: float


COLUMNS: tuple[Column, ...] = (
    Column("BTCV mean Dice", "t3d_btcv_seg", "mean_dice", 0.5),
    Column("Lung tumour Dice", "t3d_msd_lung", "mean_dice", 0.3),
    Column("BraTS TC Dice", "t3d_brats", "tc", 0.5),
    Column("BraTS WT Dice", "t3d_brats", "wt", 0.5),
    Column("BraTS ET Dice", "t3d_brats", "et", 0.5),
    Column("Classification macro AUROC", "t3d_bimcv_cls", "macro_auroc", 0.7),
    # protocol 3 (#27): the findings the new world makes subtle in the pixels (its datalists' "subtle_findings")
    Column("Subtle-finding macro AUROC", "t3d_bimcv_cls", "macro_auroc_subtle", 0.7),
)

#: downstream modes: the bundle key that freezes the transferred encoder, per task
MODES: dict[str, dict[str, dict]] = {
    "finetune": {"segmentation": {}, "classification": {}},
    "probe": {"segmentation": {"frozen_encoder": True}, "classification": {"linear_probe": True}},
}
#: the pairs whose differences the verdict states (row A minus row B); ablations are compared with T3D
PAIRS: tuple[tuple[str, str], ...] = (
    ("t3d", "ssl_swin"),
    ("t3d", "restoration_only"),
    ("t3d", "scratch"),
    ("ssl_swin", "scratch"),
)

#: budgets per scale. Toy: equal for every row (same pre-training data, steps and crops; same downstream budget).
SCALES: dict[str, dict] = {
    "toy": {
        # #8's regime: K = 8 stratified 16^3 crops of 32^3 volumes, long reports, 4 volumes a step
        "pretrain_configs": ("train.json", "cpu_toy.json", "cpu_toy_subvolume.json"),
        "finetune_configs": ("train.json", "cpu_toy.json"),
        "pretrain_overrides": {"max_epochs": 2, "val_interval": 2},
        "pretrain_epoch_length": 250,
        "pretrain_seeds": 2,
        # per bundle, measured (2026-12-03) so that scratch on 100 % of the labels clears every column's floor
        "finetune_iterations": {"t3d_brats": 100, "t3d_msd_lung": 60, "t3d_bimcv_cls": 240, "t3d_btcv_seg": 150},
        # validations per downstream run: the checkpoint best on validation is the one scored on test
        "validations": 3,
        "test_fraction": 0.2,
        "miniature_cases": 30,
        "seeds": 3,
        "modes": {"finetune": (0.1, 1.0), "probe": (1.0,)},
        # bundles that only run the floor check (scratch, fine-tuned on 100 %): their columns stay at floor
        "floor_only": {
            "t3d_btcv_seg": "floor check only: 13 organs, several only a few voxels at 12 x 12 x 8 mm in a 32^3 slab; "
            "150 iterations already cost 23-39 s a run, and clearing 0.5 would need several times that for each of "
            "the bundle's 63 runs, beyond the 90-minute toy table (docs/paper_table.md, 'How the budgets were "
            "chosen')"
        },
        "skip_rows": {
            "clinicalbert": "its toy stand-in (the local BERT with fewer masked-LM steps) is not ClinicalBERT; the "
            "full scale runs it"
        },
        # the rows a plain toy run has: the 90-minute budget goes to 2 x 500-step pre-trainings of the base rows
        "default_rows": ("scratch", "ssl_swin", "restoration_only", "t3d"),
        "default_rows_note": "not in the default toy plan: each ablation row adds 2 pre-trainings of 500 steps and "
        "54 downstream runs (about 20 min on 2 cores), beyond the 90-minute toy table; `--rows` adds it under the "
        "same protocol, and the full scale runs it",
    },
    "full": {
        "pretrain_configs": ("train.json",),
        "finetune_configs": ("train.json",),
        "pretrain_overrides": {},
        "pretrain_seeds": 2,
        "finetune_iterations": None,  # the bundles' own schedules
        "validations": None,
        "test_fraction": 0.2,
        "miniature_cases": None,
        "seeds": 3,
        "modes": {"finetune": (0.01, 0.1, 1.0), "probe": (1.0,)},
        "floor_only": {},
        "skip_rows": {},
        "default_rows": None,  # every row
    },
}


# the toy's configs and protocol at GPU size (#27, ``scripts/paper_table_gpu.sh``): one H100 shared by several worker
# processes, <= 12 min wall for the registered protocol. Only size keys differ from the toy (widths, steps, batch,
# iterations, miniature cases, workers, device); provisional: calibrate on validation with the first GPU lease
SCALES["gpu"] = {
    **SCALES["toy"],
    "generated": True,
    "pretrain_overrides": {
        **SCALES["toy"]["pretrain_overrides"],
        "device": "$torch.device('cuda:0')",
        "amp": True,
        "batch_size": 8,
        "num_workers": 2,
        "image_backbone#features": [16, 32, 64, 128, 128, 16],
    },
    # the downstream networks take the pre-training backbone (widths and norm) from the pre-training config
    "finetune_overrides": {"device": "$torch.device('cuda:0')", "amp": True},
    "pretrain_epoch_length": 750,
    "pretrain_seeds": 3,
    "finetune_iterations": {"t3d_brats": 300, "t3d_msd_lung": 180, "t3d_bimcv_cls": 600, "t3d_btcv_seg": 450},
    "miniature_cases": 60,
    "floor_only": {},
    "default_rows_note": "the gpu scale is for the registered protocol's rows (--protocol v3)",
}


@dataclass(frozen=True)
class Run:
    """One downstream run; ``pretrain_seed`` is None for scratch (nothing pre-trained)."""

    row: str
    pretrain_seed: int | None
    bundle: str
    mode: str
    fraction: float
    seed: int

    @property
    def run_id(self) -> str:
        row = self.row if self.pretrain_seed is None else f"{self.row}__pt{self.pretrain_seed}"
        return f"{row}__{self.bundle}__{self.mode}__frac{self.fraction * 100:g}__seed{self.seed}"

    def to_dict(self) -> dict:
        return {**asdict(self), "run_id": self.run_id}


def discover_rows(scale: str, bundles_dir: str = BUNDLES_DIR) -> tuple[list[Row], dict[str, str]]:
    """Rows to run at ``scale`` (base rows, one per ``ablation_*.json``, then the control rows) and ``{row: reason}``
    of rows left out."""
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
    rows += CONTROL_ROWS
    skipped = {r.name: r.skip[scale] for r in rows if scale in r.skip}
    skipped.update({name: why for name, why in SCALES[scale]["skip_rows"].items() if name in {r.name for r in rows}})
    return [r for r in rows if r.name not in skipped], skipped


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
    pretrain_seeds: int | None = None,
    modes: list[str] | None = None,
    budget: dict | None = None,
) -> dict:
    """The whole protocol at ``scale`` as plain data: rows, bundles, modes, floors, pairs, runs, and what was left out
    and why. ``rows`` / ``bundles`` / ``modes`` restrict it, ``fractions`` keeps only those fractions of every mode
    (default: everything the scale runs); ``budget`` replaces scale keys (``floor_only``, ``modes``, ...)."""
    if scale not in SCALES:
        raise ValueError(f"scale: expected one of {sorted(SCALES)}, found {scale!r}")
    spec = {**SCALES[scale], **(budget or {})}
    all_rows, skipped_rows = discover_rows(scale, bundles_dir)
    all_bundles, skipped_bundles = discover_bundles(bundles_dir)
    unknown = (
        set(rows or ()) - {r.name for r in all_rows}
        | set(bundles or ()) - {b.name for b in all_bundles}
        | set(modes or ()) - set(spec["modes"])
    )
    if unknown:
        raise ValueError(
            f"rows/bundles/modes: {sorted(unknown)} not in the {scale} plan (rows {[r.name for r in all_rows]}, "
            f"bundles {[b.name for b in all_bundles]}, modes {sorted(spec['modes'])})"
        )
    default_rows = spec.get("default_rows")
    if not rows and default_rows:
        skipped_rows = {
            **skipped_rows,
            **{r.name: spec["default_rows_note"] for r in all_rows if r.name not in default_rows},
        }
    controls = {r.name for r in CONTROL_ROWS}  # only when asked for (the registered protocol asks)
    chosen_rows = [r for r in all_rows if r.name in (rows or default_rows or [r.name for r in all_rows
                                                                              if r.name not in controls])]  # fmt: skip
    chosen_bundles = [b for b in all_bundles if not bundles or b.name in bundles]
    wanted = [float(f) for f in fractions] if fractions else None
    plan_modes = {
        mode: [float(f) for f in spec["modes"][mode] if wanted is None or float(f) in wanted]
        for mode in spec["modes"]
        if not modes or mode in modes
    }
    if wanted and not any(plan_modes.values()):  # fractions the scale does not list: fine-tune at those
        plan_modes = {"finetune": wanted}
    plan_modes = {mode: f for mode, f in plan_modes.items() if f}
    seeds = spec["seeds"] if seeds is None else int(seeds)
    pretrain_seeds = spec["pretrain_seeds"] if pretrain_seeds is None else int(pretrain_seeds)
    all_fractions = sorted({f for f in itertools.chain(*plan_modes.values())})
    if seeds < 1 or pretrain_seeds < 1 or not all(0 < f <= 1 for f in all_fractions):
        raise ValueError(
            f"expected seeds >= 1, pretrain_seeds >= 1 and fractions in (0, 1], found {seeds}, {pretrain_seeds}, "
            f"{all_fractions}"
        )
    floor_only = {b: why for b, why in spec["floor_only"].items() if b in {x.name for x in chosen_bundles}}
    runs = []
    for row in chosen_rows:
        for bundle in chosen_bundles:
            for mode, mode_fractions in plan_modes.items():
                for fraction in mode_fractions:
                    if bundle.name in floor_only and (row.pretrain or mode != "finetune" or fraction != 1.0):
                        continue
                    for pretrain_seed in range(pretrain_seeds) if row.pretrain else [None]:
                        runs += [Run(row.name, pretrain_seed, bundle.name, mode, fraction, s) for s in range(seeds)]
    names = {r.name for r in chosen_rows}
    ablations = [r.name for r in chosen_rows if r.name not in {b.name for b in BASE_ROWS}]
    return {
        "protocol": 2,
        "scale": scale,
        "seeds": seeds,
        "pretrain_seeds": pretrain_seeds,
        "fractions": all_fractions,
        "modes": plan_modes,
        "rows": [
            {"name": r.name, "label": r.label, "pretrain": r.pretrain, "note": r.toy_note if scale == "toy" else ""}
            for r in chosen_rows
        ],
        "bundles": [
            {
                "name": b.name,
                "label": b.label,
                "metrics": list(b.metrics),
                "floor_only": b.name in floor_only,
                "note": floor_only.get(b.name, ""),
            }
            for b in chosen_bundles
        ],
        "floors": {c.label: c.floor for c in COLUMNS if c.bundle in {b.name for b in chosen_bundles}},
        "pairs": [list(p) for p in PAIRS + tuple(("t3d", a) for a in ablations) if set(p) <= names],
        "skipped_rows": skipped_rows,
        "skipped_bundles": skipped_bundles,
        "runs": [r.to_dict() for r in runs],
    }


#: the registered protocol 3 (#27): its primary contrast, secondary family, controls, seeds and rules
PROTOCOL_V3 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "protocol_v3.json")


def load_protocol(path: str = PROTOCOL_V3) -> tuple[dict, str]:
    """The registered protocol at ``path`` and the sha256 of its bytes (what a plan records and checks)."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        content = json.loads(data)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: expected the JSON of a registered protocol, found invalid JSON ({err})") from None
    if not isinstance(content, dict) or content.get("protocol") != 3 or "primary" not in content:
        raise ValueError(f"{path}: expected a protocol-3 file with a 'primary' contrast, found keys {sorted(content)}")
    return content, hashlib.sha256(data).hexdigest()


def plan_sha256(plan: dict) -> str:
    """The sha256 of a plan as it decides runs (canonical JSON without the ``command`` line that launched it)."""
    body = {k: v for k, v in plan.items() if k != "command"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def build_registered_plan(
    scale: str, protocol_path: str = PROTOCOL_V3, bundles_dir: str = BUNDLES_DIR, budget: dict | None = None
) -> dict:
    """The plan of the registered protocol at ``scale``: its rows (controls included), per bundle its modes and
    fractions, its pre-training and fine-tuning seeds, the pairs its contrasts need, ``"interval":
    "pretraining_unit"`` and ``registered`` (the file, its sha256 and its contrasts, controls and rules)."""
    protocol, digest = load_protocol(protocol_path)
    parts = []
    for bundle in protocol["bundles"]:
        modes = protocol.get("segmentation_modes", {}).get(bundle, protocol["modes"])
        spec = {**(budget or {}), "modes": modes, "floor_only": {}, "skip_rows": {}, "default_rows": None}
        parts.append(build_plan(scale, protocol["seeds"], None, protocol["rows"], [bundle], bundles_dir,
                                protocol["pretrain_seeds"], list(modes), spec))  # fmt: skip
    plan = dict(parts[0])
    contrasts = [protocol["primary"], *protocol["secondary"]["contrasts"]]
    plan["runs"] = [run for part in parts for run in part["runs"]]
    plan["bundles"] = [
        {
            **b,
            "metrics": list(
                dict.fromkeys([*b["metrics"], *(c["metric"] for c in contrasts if c["bundle"] == b["name"])])
            ),
        }
        for part in parts
        for b in part["bundles"]
    ]
    plan["floors"] = {k: v for part in parts for k, v in part["floors"].items()}
    plan["modes"] = {m: sorted({f for part in parts for f in part["modes"].get(m, [])}) for m in protocol["modes"]}
    plan["fractions"] = sorted({f for fractions in plan["modes"].values() for f in fractions})
    pairs = [(c["a"], c["b"]) for c in contrasts] + [(c["row"], c["against"]) for c in protocol["controls"].values()]
    plan["pairs"] = [list(p) for p in dict.fromkeys(pairs)]
    keys = ("primary", "secondary", "controls", "retrieval", "test", "budgets", "world", "t3d")
    plan.update(
        protocol=3,
        interval=protocol["interval"],
        registered={"file": os.path.relpath(protocol_path, REPO_ROOT), "sha256": digest,
                    **{k: protocol[k] for k in keys if k in protocol}},
    )  # fmt: skip
    return plan


def row_by_name(name: str, scale: str, bundles_dir: str = BUNDLES_DIR) -> Row:
    rows, _ = discover_rows(scale, bundles_dir)
    for row in rows:
        if row.name == name:
            return row
    raise KeyError(f"row {name!r} is not part of the {scale} plan")


def bundle_by_name(name: str) -> Bundle:
    return next(b for b in BUNDLES if b.name == name)
