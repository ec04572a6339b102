"""Handler that writes a classification evaluation: per-class and macro metrics with CIs, predictions, ROC figure.

Attached to a MONAI ``SupervisedEvaluator`` whose post-processed output has per-study ``pred`` (probabilities,
``(C,)``) and ``label`` (0/1, ``(C,)``). At the end of a run (all ranks gather; rank 0 writes) into ``output_dir``:

- ``{prefix}metrics.json``: :func:`~custom.evaluation.classification_metrics.classification_report` (macro and
  per-class AUROC / AUPRC with bootstrap CIs over patients, F1 at the thresholds, classes without positives listed);
  each study's patient is :func:`~custom.data.datalist.patient_id_of` its data row (``patient_id``, else the image
  file name), read from the evaluator's decollated batch;
- ``{prefix}per_class.csv``: the per-class table; ``{prefix}predictions.csv``: one row per study;
- ``{prefix}roc_curves.png``: ROC curves of the ``roc_classes`` most frequent classes;
- ``save_thresholds_file`` (optional): the F1-maximising thresholds chosen on this split, for another split to use.

``thresholds_file`` (optional) supplies thresholds chosen on another split (normally validation); without it the
thresholds are chosen on the evaluated split itself and the report says so. With ``metric_name`` the macro AUROC
also goes into ``engine.state.metrics[metric_name]`` (at the end of the run, after per-epoch logging).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events

from custom.data.datalist import patient_id_of
from custom.errors import DataError
from custom.evaluation.classification_metrics import classification_report
from custom.evaluation.figures import plot_roc_curves
from custom.handlers.multilabel_metric import gather_rows

__all__ = ["ClassificationReport", "read_thresholds"]


def read_thresholds(path: str, class_names: Sequence[str]) -> list[float]:
    """Thresholds from a file written by ``save_thresholds_file``; its classes must be ``class_names``."""
    if not os.path.isfile(path):
        raise DataError(
            f"thresholds_file: expected a thresholds JSON written by a validation run, found no file at {path}"
        )
    with open(path, encoding="utf-8") as f:
        content = json.load(f)
    if content.get("class_names") != list(class_names):
        raise DataError(f"{path} key 'class_names': expected {list(class_names)}, found {content.get('class_names')}")
    return [float(t) for t in content["thresholds"]]


def _filename(item: dict, fallback: str) -> str:
    image = item.get("image")
    meta = getattr(image, "meta", None) or {}
    name = meta.get("filename_or_obj", fallback)
    return str(name[0] if isinstance(name, (list, tuple)) else name)


def _gather_strings(values: list[str]) -> list[str]:
    """``values`` of every rank, in rank order (as :func:`~custom.handlers.multilabel_metric.gather_rows` orders
    tensors)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    from monai.utils import string_list_all_gather

    return string_list_all_gather(values)


class ClassificationReport:
    def __init__(
        self,
        output_dir: str,
        class_names: Sequence[str],
        split: str = "validation",
        prefix: str = "",
        thresholds_file: str | None = None,
        save_thresholds_file: str | None = None,
        n_bootstrap: int = 1000,
        roc_classes: int = 5,
        figure: bool = True,
        metric_name: str | None = None,
    ) -> None:
        self.output_dir = output_dir
        self.class_names = list(class_names)
        self.split = split
        self.prefix = prefix
        self.thresholds_file = thresholds_file
        self.save_thresholds_file = save_thresholds_file
        self.n_bootstrap = int(n_bootstrap)
        self.roc_classes = int(roc_classes)
        self.figure = figure
        self.metric_name = metric_name
        self.report: dict | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._scores: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._names: list[str] = []
        self._patients: list[str] = []

    def _collect(self, engine: Engine) -> None:
        output, batch = engine.state.output, engine.state.batch
        items = output if isinstance(output, list) else [output]
        rows = batch if isinstance(batch, list) and len(batch) == len(items) else items
        for item, row in zip(items, rows):
            self._scores.append(torch.as_tensor(item["pred"]).reshape(-1))
            self._labels.append(torch.as_tensor(item["label"]).reshape(-1))
            name = _filename(item, f"study{len(self._names)}")
            self._names.append(name)
            self._patients.append(patient_id_of({"image": name, "patient_id": row.get("patient_id")}))

    def _write(self, engine: Engine) -> None:
        scores, labels = gather_rows(self._scores), gather_rows(self._labels)
        self.write_report(engine, scores, labels, _gather_strings(self._names), _gather_strings(self._patients))

    def write_report(
        self,
        engine: Engine,
        scores: torch.Tensor,
        labels: torch.Tensor,
        names: Sequence[str],
        patient_ids: Sequence[str],
        extra: dict | None = None,
    ) -> dict:
        """Score ``(N, C)`` probabilities against ``(N, C)`` labels of the studies ``names`` of patients
        ``patient_ids`` (the bootstrap's unit) and write the files (rank 0); returns the report."""
        source = f"{self.split} split"
        thresholds = read_thresholds(self.thresholds_file, self.class_names) if self.thresholds_file else None
        threshold_source = f"chosen on another split ({self.thresholds_file})" if thresholds else None
        report = classification_report(
            labels.numpy(),
            scores.numpy(),
            self.class_names,
            thresholds,
            threshold_source,
            n_bootstrap=self.n_bootstrap,
            source=source,
            patient_ids=list(patient_ids),
        )
        report = {"split": self.split, **(extra or {}), **report}
        self.report = report
        macro = report["macro"]["auroc"]
        if self.metric_name:
            engine.state.metrics[self.metric_name] = macro if math.isfinite(macro) else float("nan")
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return report
        os.makedirs(self.output_dir, exist_ok=True)
        out = lambda name: os.path.join(self.output_dir, f"{self.prefix}{name}")  # noqa: E731
        with open(out("metrics.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
        with open(out("per_class.csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(
                [
                    "class",
                    "positives",
                    "negatives",
                    "auroc",
                    "auroc_ci_low",
                    "auroc_ci_high",
                    "auprc",
                    "auprc_ci_low",
                    "auprc_ci_high",
                    "threshold",
                    "f1",
                    "note",
                ]
            )
            for e in report["per_class"]:
                ci_a, ci_p = e.get("auroc_ci", ["", ""]), e.get("auprc_ci", ["", ""])
                writer.writerow(
                    [
                        e["class"],
                        e["positives"],
                        e["negatives"],
                        e["auroc"],
                        *ci_a,
                        e["auprc"],
                        *ci_p,
                        e["threshold"],
                        e["f1"],
                        e["note"],
                    ]
                )
        with open(out("predictions.csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            probabilities, truths = [f"p_{n}" for n in self.class_names], [f"y_{n}" for n in self.class_names]
            writer.writerow(["image", "patient_id", *probabilities, *truths])
            for name, patient, score, label in zip(names, patient_ids, scores.tolist(), labels.tolist()):
                writer.writerow([name, patient, *[f"{s:.6f}" for s in score], *[int(v) for v in label]])
        if self.save_thresholds_file:
            os.makedirs(os.path.dirname(os.path.abspath(self.save_thresholds_file)), exist_ok=True)
            with open(self.save_thresholds_file, "w", encoding="utf-8") as f:
                json.dump(
                    {
                        "class_names": self.class_names,
                        "thresholds": report["thresholds"],
                        "chosen_on": self.split,
                        "rule": "F1-maximising, predict positive when p >= threshold",
                    },
                    f,
                    indent=1,
                )
        if self.figure:
            plot_roc_curves(
                labels.numpy(),
                scores.numpy(),
                self.class_names,
                out("roc_curves.png"),
                self.roc_classes,
                title=f"{'zero-shot' if self.prefix.startswith('zero_shot') else 'classification'} ROC, "
                f"{self.split} split, macro AUROC {macro:.3f}",
            )
        return report
