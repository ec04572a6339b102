"""What users run is what learns: ``train.json`` at CPU size, changed in size keys only, on the second synthetic
world, scored on held-out studies against chance.

    python -m t3d_tools.experiments.learning_check --path unet --out results/learning_check/unet

The run is three commands of the ``t3d_pretrain`` bundle, as a user types them (``python -m monai.bundle run`` in the
bundle folder, one process each):

1. train: ``train.json`` [+ ``ablation_unet_backbone.json``] + ``cpu_size.json`` + ``cpu_size_<path>.json``; the
   size overlays change only the keys of :data:`SIZE_KEYS` (``tests/test_size_overlays.py`` enforces it), so report
   affinity (``auto``, which resolves to calibrated text similarity on this world: its training rows have no labels),
   crop sampling and jitter, text freezing and the evaluation geometry are the shipped ones;
2. ``evaluate_retrieval.json`` on the validation split: report->volume R@1 against chance ``1 / N`` and the
   one-sided binomial p of that many hits (a random ranking puts the right volume first with probability ``1 / N``
   per report);
3. ``evaluate_zero_shot.json`` on the test split with the world's prompt set: macro AUROC over the subtle findings
   (chance 0.5) with a patient-level bootstrap interval.

``--steps``/``--num_train``/... shrink the run (the CI-size test uses them); every override is a size key too.
Everything lands in ``--out``: the bundle's outputs, ``learning_check.json`` and the printed summary.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import subprocess
import sys
import time

import numpy as np

from t3d_tools import REPO_ROOT

__all__ = ["PATHS", "SIZE_KEYS", "size_overrides", "run_learning_check", "binomial_tail", "main"]

BUNDLE_DIR = os.path.join(REPO_ROOT, "bundles", "t3d_pretrain")
#: where ``cpu_size.json`` generates the world, under the bundle root
WORLD_DIR = os.path.join("data", "world_v2_cpu")

#: the config files of each backbone path, in stacking order: the shipped configs, then the size-only overlays
PATHS: dict[str, list[str]] = {
    "unet": ["train.json", "ablation_unet_backbone.json", "cpu_size.json", "cpu_size_unet.json"],
    "swin": ["train.json", "cpu_size.json", "cpu_size_swin.json"],
}

#: the only ids a CPU-size overlay of ``train.json`` may set, each with why it is a size (or a location) and not the
#: method; an id is allowed with everything under it (``prepare_data`` covers ``prepare_data#world#shape``)
SIZE_KEYS: dict[str, str] = {
    "image_backbone#feature_size": "feature size (SwinUNETR width)",
    "image_backbone#features": "feature size (BasicUNet widths)",
    "image_backbone#use_checkpoint": "recomputes activations in backward: memory, not maths",
    "crop_size": "crop size",
    "mask_block_size": "TIR mask blocks in voxels: scales with the crop size",
    "prepare_data": "volume size and study counts of the generated world, and the offline stand-in for RadBERT",
    "dataset_dir": "where the data lives",
    "offline_text_encoder_dir": "where the offline text encoder lives",
    "text_encoder_name": "where the text encoder lives (RadBERT cannot be downloaded here: its stand-in)",
    "batch_size": "batch",
    "num_workers": "loader workers",
    "max_epochs": "steps",
    "epoch_length": "steps",
    "val_interval": "steps",
    "checkpoint_every_iterations": "steps",
    "precise_bn_batches": "steps",
    "device": "hardware",
    "amp": "hardware: bf16 autocast is for GPUs",
}


def size_key_of(key: str) -> str | None:
    """The :data:`SIZE_KEYS` entry that allows config id ``key`` (itself or an ancestor), else None."""
    parts = key.split("#")
    for end in range(len(parts), 0, -1):
        if "#".join(parts[:end]) in SIZE_KEYS:
            return "#".join(parts[:end])
    return None


def size_overrides(
    steps: int | None = None,
    epochs: int | None = None,
    num_train: int | None = None,
    num_val: int | None = None,
    num_test: int | None = None,
    val_interval: int | None = None,
) -> dict:
    """Command-line overrides that shrink the run; ``steps`` per epoch x ``epochs``, validated every ``val_interval``
    epochs (default: once, at the end)."""
    overrides: dict = {}
    if steps is not None:
        overrides["epoch_length"] = steps
    if epochs is not None:
        overrides["max_epochs"] = epochs
        overrides["val_interval"] = epochs  # validate once, at the end
    if val_interval is not None:
        overrides["val_interval"] = val_interval  # a validation curve; precise BN is recomputed before each one
    for name, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
        if value is not None:
            overrides[f"prepare_data#world#{name}"] = value
    return overrides


def binomial_tail(hits: int, trials: int, chance: float) -> float:
    """P(X >= hits) for X ~ Binomial(trials, chance)."""
    return float(sum(math.comb(trials, i) * chance**i * (1 - chance) ** (trials - i) for i in range(hits, trials + 1)))


def _bundle_command(configs: list[str], bundle_root: str, overrides: dict) -> list[str]:
    files = "[" + ",".join(f"'configs/{c}'" for c in configs) + "]"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, "--bundle_root", bundle_root]
    for key, value in overrides.items():
        command += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return command


def _run(command: list[str], log_path: str) -> float:
    """Run one bundle command in the bundle folder, its output to ``log_path``; returns its wall seconds."""
    print("$ " + " ".join(shlex.quote(c) for c in command), flush=True)
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        done = subprocess.run(command, cwd=BUNDLE_DIR, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        with open(log_path, encoding="utf-8") as log:
            last = [line for line in log.read().splitlines() if line.strip()][-1:]
        raise RuntimeError(f"{command[5]}: exit {done.returncode} ({log_path}): {last[0] if last else ''}")
    return time.perf_counter() - start


def _subtle_zero_shot(predictions_csv: str, subtle: list[str], n_bootstrap: int) -> dict:
    """Macro AUROC over the ``subtle`` classes of a zero-shot predictions file, with a patient-level 95 % interval."""
    from custom.evaluation.classification_metrics import bootstrap_ci, roc_auc

    with open(predictions_csv, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    truth = np.asarray([[float(r[f"y_{c}"]) for c in subtle] for r in rows])
    score = np.asarray([[float(r[f"p_{c}"]) for c in subtle] for r in rows])
    patients = [r["patient_id"] for r in rows]

    def macro(y: np.ndarray, s: np.ndarray) -> float:
        values = [roc_auc(y[:, c], s[:, c]) for c in range(y.shape[1])]
        values = [v for v in values if np.isfinite(v)]
        return float(np.mean(values)) if values else float("nan")

    low, high = bootstrap_ci(truth, score, macro, n_bootstrap=n_bootstrap, groups=patients)
    per_class = {c: roc_auc(truth[:, i], score[:, i]) for i, c in enumerate(subtle)}
    return {
        "macro_auroc": macro(truth, score), "ci95": [low, high], "per_class": per_class, "studies": len(rows),
        "patients": len(set(patients)), "chance": 0.5,
    }  # fmt: skip


def run_learning_check(path: str, out: str, overrides: dict | None = None, n_bootstrap: int = 1000) -> dict:
    """Train, then score retrieval (validation) and zero-shot on the subtle findings (test); see the module doc."""
    if path not in PATHS:
        raise ValueError(f"--path: expected one of {sorted(PATHS)}, found {path!r}")
    overrides = dict(overrides or {})
    refused = sorted(k for k in overrides if size_key_of(k) is None)
    if refused:
        raise ValueError(f"overrides: only size keys may change ({sorted(SIZE_KEYS)}), found {refused}")
    out = os.path.abspath(out)
    root = os.path.join(out, "bundle")
    os.makedirs(root, exist_ok=True)
    configs = PATHS[path]
    seconds = {"train": _run(_bundle_command(configs, root, overrides), os.path.join(out, "train.log"))}
    seconds["retrieval"] = _run(
        _bundle_command([*configs, "evaluate_retrieval.json"], root, {**overrides, "eval_split": "validation"}),
        os.path.join(out, "evaluate_retrieval.log"),
    )
    with open(os.path.join(root, "runs", "retrieval_metrics.json"), encoding="utf-8") as f:
        retrieval = json.load(f)
    seconds["zero_shot"] = _run(
        _bundle_command(
            [*configs, "evaluate_zero_shot.json"],
            root,
            {**overrides, "eval_split": "test", "prompt_file": "world_v2.json", "eval_bootstrap": n_bootstrap},
        ),
        os.path.join(out, "evaluate_zero_shot.log"),
    )
    with open(os.path.join(root, WORLD_DIR, "pairs_datalist.json"), encoding="utf-8") as f:
        subtle = json.load(f)["subtle_findings"]
    zero_shot = _subtle_zero_shot(os.path.join(root, "runs", "zero_shot_predictions.csv"), subtle, n_bootstrap)
    studies = int(round(1 / retrieval["chance_R1"]))  # chance_R1 = 1 / N
    hits = int(round(retrieval["report_to_volume_R1"] * studies))
    result = {
        "path": path,
        "configs": configs,
        "overrides": overrides,
        "retrieval": {
            "split": "validation", "studies": studies, "report_to_volume_R1": hits / studies, "hits": hits,
            "chance": 1 / studies, "ratio_to_chance": hits, "binomial_p": binomial_tail(hits, studies, 1 / studies),
            "report_to_volume_R5": retrieval.get("report_to_volume_R5"),
        },
        "zero_shot_subtle": zero_shot,
        "wall_seconds": seconds,
    }  # fmt: skip
    with open(os.path.join(out, "learning_check.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    r, z = result["retrieval"], zero_shot
    print(
        f"[{path}] held-out report->volume R@1 {r['report_to_volume_R1']:.3f} ({hits}/{studies}; chance "
        f"{r['chance']:.4f}, {hits:.0f}x chance, binomial p {r['binomial_p']:.2g}); zero-shot macro AUROC on the "
        f"subtle findings {z['macro_auroc']:.3f} (95 % patient CI {z['ci95'][0]:.3f}-{z['ci95'][1]:.3f}, "
        f"{z['studies']} test studies, {z['patients']} patients; chance 0.5); wall {sum(seconds.values()) / 60:.1f} min"
    )
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", choices=sorted(PATHS), default="unet")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=None, help="steps per epoch (epoch_length)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--val_interval", type=int, default=None, help="validate every N epochs (default: at the end)")
    parser.add_argument("--num_train", type=int, default=None)
    parser.add_argument("--num_val", type=int, default=None)
    parser.add_argument("--num_test", type=int, default=None)
    parser.add_argument("--n_bootstrap", type=int, default=1000)
    args = parser.parse_args(argv)
    overrides = size_overrides(args.steps, args.epochs, args.num_train, args.num_val, args.num_test, args.val_interval)
    return run_learning_check(args.path, args.out, overrides, args.n_bootstrap)


if __name__ == "__main__":
    main()
