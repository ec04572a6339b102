"""Zero-shot classification of an ``EmbeddingEvaluator`` run: prompt ensembles scored against volume embeddings.

Attached to :class:`~custom.engines.embedding_evaluator.EmbeddingEvaluator` (``PairsDataset(eval_grid=n)`` items,
a ``T3DModel``). It collects every volume's embedding with its dataset index; at the end it embeds the prompt set
with the model's own text tower and projection (:func:`custom.evaluation.zero_shot.class_prompt_embeddings`),
scores each class (:func:`custom.evaluation.zero_shot.zero_shot_probabilities`, the model's learnt temperature),
and writes ``zero_shot_metrics.json`` / ``zero_shot_per_class.csv`` / ``zero_shot_predictions.csv`` /
``zero_shot_roc_curves.png`` through :class:`~custom.handlers.classification_report.ClassificationReport`'s writer.
``engine.state.metrics["zero_shot_macro_auroc"]`` gets the macro AUROC (chance 0.5). No fine-tuning happens.

Labels are each row's multi-hot ``label_vector`` over ``class_names`` (checked: wrong length stops the run).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ignite.engine import Engine

from custom.data.datalist import patient_id_of
from custom.errors import DataError
from custom.evaluation.zero_shot import class_prompt_embeddings, load_prompt_set, zero_shot_probabilities
from custom.handlers.classification_report import ClassificationReport
from custom.handlers.embedding_collector import EmbeddingCollector
from custom.weights.checkpoint import unwrap

__all__ = ["ZeroShotClassification"]


class ZeroShotClassification(EmbeddingCollector):
    def __init__(
        self,
        prompt_file: str,
        class_names: Sequence[str],
        rows: Sequence[dict],
        output_dir: str,
        split: str = "validation",
        label_key: str = "label_vector",
        n_bootstrap: int = 1000,
        roc_classes: int = 5,
    ) -> None:
        self.class_names = list(class_names)
        self.prompt_set = load_prompt_set(prompt_file, self.class_names)  # checked now, before any volume is encoded
        self.labels = []
        self.images = [str(row.get("image", f"study{i}")) for i, row in enumerate(rows)]
        self.patients = [patient_id_of({**row, "image": image}) for row, image in zip(rows, self.images)]
        for index, row in enumerate(rows):
            vector = row.get(label_key)
            if not isinstance(vector, (list, tuple)) or len(vector) != len(self.class_names):
                found = f"length {len(vector)}" if isinstance(vector, (list, tuple)) else repr(vector)
                raise DataError(
                    f"{split} row #{index} ({row.get('image', '?')}) key '{label_key}': expected a label "
                    f"vector of length {len(self.class_names)} (class_names), found {found}"
                )
            self.labels.append([float(v) for v in vector])
        self.writer = ClassificationReport(
            output_dir,
            self.class_names,
            split,
            prefix="zero_shot_",
            n_bootstrap=n_bootstrap,
            roc_classes=roc_classes,
            metric_name="zero_shot_macro_auroc",
        )
        self.report: dict | None = None
        self.scored: tuple[torch.Tensor, torch.Tensor, list[str]] | None = None  # (probabilities, labels, patients)

    @torch.no_grad()
    def finish(self, engine: Engine, indices: list[int], images: torch.Tensor, texts: torch.Tensor | None) -> None:
        model = unwrap(engine.network)
        model.eval()
        positive, negative = class_prompt_embeddings(model.embed_reports, self.prompt_set)
        scale = float(model.logit_scale.detach().exp())  # bounded by the trainer (T3DModel.clamp_logit_scale_)
        probabilities = zero_shot_probabilities(images, positive.cpu(), negative.cpu(), scale)
        labels = torch.tensor([self.labels[i] for i in indices])
        extra = {
            "prompt_file": self.prompt_set.path,
            "prompt_version": self.prompt_set.version,
            "classes_with_default_prompts": self.prompt_set.from_defaults,
            "logit_scale": scale,
        }
        images, patients = [self.images[i] for i in indices], [self.patients[i] for i in indices]
        self.scored = (probabilities, labels, patients)
        self.report = self.writer.write_report(engine, probabilities, labels, images, patients, extra)
