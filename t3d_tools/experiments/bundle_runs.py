"""One bundle run from Python: the ``monai.bundle`` workflow or parser of a bundle's config files with overrides, the
equivalent ``python -m monai.bundle run`` command line that a result records, and the metrics read off a finished
run's evaluator."""

from __future__ import annotations

import json
import os
import shlex

from t3d_tools.experiments.protocol import BUNDLES_DIR, PRETRAIN_BUNDLE

__all__ = [
    "bundle_workflow",
    "bundle_parser",
    "bundle_run_command",
    "pretrain_config_keys",
    "segmentation_metrics",
    "classification_metrics",
    "subset_auroc",
]


def bundle_workflow(bundle: str, configs: list[str], bundle_root: str | None, overrides: dict):
    """The ``ConfigWorkflow`` of ``bundle``'s ``configs`` (names under its ``configs/``) with ``overrides``."""
    from monai.bundle import ConfigWorkflow

    config_dir = os.path.join(BUNDLES_DIR, bundle, "configs")
    kwargs = {"bundle_root": bundle_root} if bundle_root else {}
    return ConfigWorkflow(
        config_file=[os.path.join(config_dir, c) for c in configs],
        meta_file=os.path.join(config_dir, "metadata.json"),
        logging_file=False,
        workflow_type=None,
        **kwargs,
        **overrides,
    )


def bundle_parser(bundle: str, configs: list[str], overrides: dict):
    """The ``ConfigParser`` of ``bundle``'s ``configs`` with ``overrides`` (nothing instantiated)."""
    from monai.bundle import ConfigParser

    config_dir = os.path.join(BUNDLES_DIR, bundle, "configs")
    parser = ConfigParser()
    parser.read_config([os.path.join(config_dir, c) for c in configs])
    parser.update(overrides)
    return parser


def bundle_run_command(bundle: str, configs: list[str], overrides: dict) -> str:
    """The ``python -m monai.bundle run`` command line equivalent to :func:`bundle_workflow` with these arguments."""
    files = "[" + ",".join(f"'configs/{c}'" for c in configs) + "]"
    args = " ".join(f"--{k} {shlex.quote(v if isinstance(v, str) else json.dumps(v))}" for k, v in overrides.items())
    return f'cd bundles/{bundle} && python -m monai.bundle run --config_file "{files}" {args}'.strip()


def pretrain_config_keys(config_name: str) -> set[str]:
    """The top-level keys one pre-training config file sets."""
    with open(os.path.join(BUNDLES_DIR, PRETRAIN_BUNDLE, "configs", config_name), encoding="utf-8") as f:
        return set(json.load(f))


def segmentation_metrics(evaluator) -> tuple[dict, dict]:
    """``val_mean_dice`` and per-class means (NaN-skipping over cases) of a segmentation evaluator's last run;
    BraTS channels are TC, WT, ET (``custom.transforms.brats_labels.REGIONS``)."""
    import torch

    mean = float(evaluator.state.metrics["val_mean_dice"])
    details = evaluator.state.metric_details.get("val_mean_dice")
    per_class = (
        torch.nanmean(torch.as_tensor(details, dtype=torch.float64), dim=0).tolist() if details is not None else []
    )
    metrics = {"mean_dice": mean}
    if len(per_class) == 3:
        metrics.update(tc=per_class[0], wt=per_class[1], et=per_class[2])
    return metrics, {"per_class_dice": per_class}


def classification_metrics(evaluator) -> tuple[dict, dict]:
    """``macro_auroc``: the evaluator's first metric named like AUC / AUROC (the classification bundle's key metric)."""
    names = [k for k in evaluator.state.metrics if "auc" in k.lower() or "auroc" in k.lower()]
    if not names:
        raise KeyError(f"expected an AUROC metric in the evaluator's metrics, found {sorted(evaluator.state.metrics)}")
    return {"macro_auroc": float(evaluator.state.metrics[names[0]])}, {"all_metrics": dict(evaluator.state.metrics)}


def subset_auroc(output_dir: str, datalist: str | None, key: str = "subtle_findings") -> dict:
    """``{"macro_auroc_subtle": mean per-class AUROC over the classes the datalist lists under ``key``,
    "test_studies": N}`` from the ``test_metrics.json`` a classification test run wrote into ``output_dir``; only
    ``test_studies`` when the datalist names no such classes (the v1 toy world)."""
    import math

    with open(os.path.join(output_dir, "test_metrics.json"), encoding="utf-8") as f:
        report = json.load(f)
    found = {"test_studies": float(report["studies"])}
    names = []
    if datalist and os.path.isfile(datalist):
        with open(datalist, encoding="utf-8") as f:
            names = json.load(f).get(key) or []
    if names:
        per_class = {c["class"]: c["auroc"] for c in report["per_class"]}
        missing = sorted(set(names) - set(per_class))
        if missing:
            raise KeyError(f"{datalist} '{key}': classes {missing} are not among the scored {sorted(per_class)}")
        values = [per_class[n] for n in names if per_class[n] is not None and math.isfinite(per_class[n])]
        found["macro_auroc_subtle"] = sum(values) / len(values) if values else float("nan")
    return found
