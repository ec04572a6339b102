"""Inference handler: per-class probabilities of each volume, as one JSON per volume and one CSV for the run.

Attached to a MONAI evaluator whose post-processed ``pred`` is ``(C,)`` probabilities. Writes
``<output_dir>/<image stem>_probabilities.json`` (``{"image", "class_names", "probabilities": {class: p},
"positive": [classes with p >= threshold]}``; ``positive`` only when a thresholds file is given) and
``<output_dir>/probabilities.csv`` (``image`` then one column per class), rewritten at the end of each run.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence

import torch
from ignite.engine import Engine, Events

from custom.handlers.classification_report import _filename, read_thresholds

__all__ = ["ProbabilityWriter"]


def _stem(path: str) -> str:
    name = os.path.basename(path)
    for suffix in (".nii.gz", ".nii", ".mha", ".nrrd", ".npy"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return os.path.splitext(name)[0]


class ProbabilityWriter:
    def __init__(self, output_dir: str, class_names: Sequence[str], thresholds_file: str | None = None) -> None:
        self.output_dir = output_dir
        self.class_names = list(class_names)
        self.thresholds_file = thresholds_file
        self.rows: list[tuple[str, list[float]]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._write_one)
        engine.add_event_handler(Events.COMPLETED, self._write_table)

    def _write_one(self, engine: Engine) -> None:
        output = engine.state.output
        thresholds = None
        if self.thresholds_file and os.path.isfile(self.thresholds_file):
            thresholds = read_thresholds(self.thresholds_file, self.class_names)
        for item in output if isinstance(output, list) else [output]:
            probabilities = torch.as_tensor(item["pred"]).detach().float().cpu().reshape(-1).tolist()
            if len(probabilities) != len(self.class_names):
                raise ValueError(
                    f"ProbabilityWriter: expected {len(self.class_names)} probabilities (class_names), "
                    f"found {len(probabilities)}"
                )
            image = _filename(item, f"volume{len(self.rows)}")
            document = {
                "image": image,
                "class_names": self.class_names,
                "probabilities": dict(zip(self.class_names, probabilities)),
            }
            if thresholds is not None:
                document["thresholds"] = dict(zip(self.class_names, thresholds))
                document["positive"] = [n for n, p, t in zip(self.class_names, probabilities, thresholds) if p >= t]
            os.makedirs(self.output_dir, exist_ok=True)
            with open(os.path.join(self.output_dir, f"{_stem(image)}_probabilities.json"), "w", encoding="utf-8") as f:
                json.dump(document, f, indent=1)
            self.rows.append((image, probabilities))

    def _write_table(self, engine: Engine) -> None:
        os.makedirs(self.output_dir, exist_ok=True)
        with open(os.path.join(self.output_dir, "probabilities.csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["image", *self.class_names])
            for image, probabilities in self.rows:
                writer.writerow([image, *[f"{p:.6f}" for p in probabilities]])
