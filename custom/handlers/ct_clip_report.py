"""CT-CLIP's columns for an ``EmbeddingEvaluator`` run (:mod:`custom.evaluation.ct_clip_protocol`).

- :class:`CTClipZeroShot`: the project's zero-shot report (:class:`ZeroShotClassification`, files
  ``zero_shot_*``) plus ``ct_clip_zero_shot_metrics.json`` and ``ct_clip_zero_shot_per_class.csv``: AUROC, F1,
  accuracy and precision per class and macro, at CT-CLIP's thresholds, with patient-level bootstrap intervals.
- :class:`CTClipRetrieval`: the project's retrieval report (:class:`RetrievalReport`, ``retrieval_metrics.json``
  and the sheet) plus ``ct_clip_retrieval_metrics.json`` / ``.csv``: report -> volume recall@{5, 10, 50, 100} and
  volume -> volume MAP@{1, 5, 10, 50} over the rows' ``label_vector``, each with its chance level.

Both also put their macro values into ``engine.state.metrics`` with a ``ct_clip_`` prefix.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence

import torch
from ignite.engine import Engine

from custom.errors import DataError
from custom.evaluation.ct_clip_protocol import (
    CT_CLIP_METRICS,
    ct_clip_classification,
    report_to_volume_recall,
    volume_to_volume_map,
)
from custom.handlers.retrieval_report import RetrievalReport
from custom.handlers.zero_shot_classification import ZeroShotClassification

__all__ = ["CTClipZeroShot", "CTClipRetrieval"]


def _csv(path: str, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


class CTClipZeroShot(ZeroShotClassification):
    """Args: those of :class:`ZeroShotClassification` (``prompt_file`` normally ``ct_clip_v1.json``)."""

    def finish(self, engine: Engine, indices: list[int], images: torch.Tensor, texts: torch.Tensor | None) -> None:
        super().finish(engine, indices, images, texts)
        probabilities, labels, patients = self.scored
        report = ct_clip_classification(
            labels.numpy(), probabilities.numpy(), self.class_names, patients, n_bootstrap=self.writer.n_bootstrap
        )
        report = {"split": self.writer.split, "prompt_file": self.prompt_set.path, **report}
        self.ct_clip_report = report
        for metric in CT_CLIP_METRICS:
            engine.state.metrics[f"ct_clip_{metric}"] = report["macro"][metric]
        output_dir = self.writer.output_dir
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "ct_clip_zero_shot_metrics.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
        header = ["class", "positives", "threshold"]
        for metric in CT_CLIP_METRICS:
            header += [metric, f"{metric}_ci_low", f"{metric}_ci_high"]
        rows = []
        for entry in [*report["per_class"], {"class": "macro", "positives": "", "threshold": "", **report["macro"]}]:
            row = [entry["class"], entry["positives"], entry["threshold"]]
            for metric in CT_CLIP_METRICS:
                row += [entry[metric], *entry.get(f"{metric}_ci", ["", ""])]
            rows.append(row)
        _csv(os.path.join(output_dir, "ct_clip_zero_shot_per_class.csv"), header, rows)


class CTClipRetrieval(RetrievalReport):
    """Args: those of :class:`RetrievalReport`, plus ``recall_ks`` (report -> volume), ``map_ks`` (volume ->
    volume), ``label_key`` (the rows' multi-hot vector) and ``exclude_query`` (take the query out of its own
    volume -> volume gallery; CT-CLIP keeps it)."""

    def __init__(
        self,
        rows: Sequence[dict],
        output_dir: str,
        recall_ks: Sequence[int] = (5, 10, 50, 100),
        map_ks: Sequence[int] = (1, 5, 10, 50),
        label_key: str = "label_vector",
        exclude_query: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(rows, output_dir, **kwargs)
        self.recall_ks = tuple(int(k) for k in recall_ks)
        self.map_ks = tuple(int(k) for k in map_ks)
        self.label_key = label_key
        self.exclude_query = bool(exclude_query)
        missing = [i for i, row in enumerate(self.rows) if not isinstance(row.get(label_key), (list, tuple))]
        if missing:
            raise DataError(
                f"row #{missing[0]} ({self.rows[missing[0]].get('image', '?')}) key '{label_key}': expected a "
                f"multi-hot label vector for volume -> volume retrieval, found {self.rows[missing[0]].get(label_key)!r}"
            )

    def finish(self, engine: Engine, indices: list[int], images: torch.Tensor, texts: torch.Tensor | None) -> None:
        super().finish(engine, indices, images, texts)
        labels = [self.rows[i][self.label_key] for i in indices]
        metrics = {"gallery_size": len(indices)}
        metrics.update(report_to_volume_recall(images, texts, self.recall_ks))
        metrics.update(volume_to_volume_map(images, labels, self.map_ks, self.exclude_query))
        metrics["volume_to_volume_exclude_query"] = self.exclude_query
        self.ct_clip_metrics = metrics
        for name, value in metrics.items():
            if isinstance(value, float):
                engine.state.metrics[f"ct_clip_{name}"] = value
        with open(os.path.join(self.output_dir, "ct_clip_retrieval_metrics.json"), "w", encoding="utf-8") as f:
            json.dump(metrics, f, indent=1)
        rows = []
        for k in self.recall_ks:
            name = f"report_to_volume_recall@{k}"
            rows.append(["report_to_volume", "recall", k, metrics[name], metrics[f"{name}_chance"]])
        for k in self.map_ks:
            name = f"volume_to_volume_map@{k}"
            rows.append(["volume_to_volume", "map", k, metrics.get(name), metrics.get(f"{name}_chance")])
        header = ["direction", "metric", "k", "value", "chance"]
        _csv(os.path.join(self.output_dir, "ct_clip_retrieval_metrics.csv"), header, rows)
