"""Volume (and report) embeddings as a MONAI ``Evaluator``: a volume's grid crops are averaged into one embedding.

With reports it drives held-out retrieval (:class:`RetrievalMetric`); without, inference of image embeddings."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from ignite.metrics import Metric
from monai.engines import Evaluator

from custom.evaluation.retrieval import retrieval_metrics
from custom.weights.checkpoint import unwrap

__all__ = ["EmbeddingEvaluator", "RetrievalMetric"]


class RetrievalMetric(Metric):
    """Accumulates the evaluator's ``image_embedding``/``text_embedding`` outputs; ``compute`` returns one entry of
    :func:`retrieval_metrics` (``name``, e.g. ``report_to_volume_R1``)."""

    def __init__(self, name: str = "report_to_volume_R1") -> None:
        self.name = name
        super().__init__(output_transform=lambda output: (output["image_embedding"], output["text_embedding"]))

    def reset(self) -> None:
        self._images: list[torch.Tensor] = []
        self._texts: list[torch.Tensor] = []

    def update(self, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        image_embedding, text_embedding = output
        self._images.append(image_embedding.detach().cpu())
        self._texts.append(text_embedding.detach().cpu())

    def compute(self) -> float:
        return retrieval_metrics(torch.cat(self._images), torch.cat(self._texts))[self.name]


class EmbeddingEvaluator(Evaluator):
    """Batches of ``PairsDataset(eval_grid=n)`` items -> ``image_embedding`` ``(B, E)`` (mean of the crops'
    embeddings, re-normalised) and, when the batch has reports, ``text_embedding`` ``(B, E)``.
    ``network`` is a ``T3DModel`` (possibly DDP-wrapped) or a ``T3DImageEmbedder`` (images only)."""

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Iterable,
        network: torch.nn.Module,
        key_val_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        val_handlers: Sequence | None = None,
        amp: bool = False,
    ) -> None:
        super().__init__(
            device=device,
            val_data_loader=val_data_loader,
            key_val_metric=key_val_metric,
            additional_metrics=additional_metrics,
            val_handlers=val_handlers,
            amp=amp,
            decollate=False,
        )
        self.network = network

    def _iteration(self, engine: EmbeddingEvaluator, batchdata: dict) -> dict:
        model = unwrap(engine.network)
        model.eval()
        crops = batchdata["image"].to(engine.state.device, torch.float32)  # float16 from the loader
        batch, per_volume = crops.shape[:2]
        output = {}
        with torch.no_grad(), torch.autocast(crops.device.type, dtype=torch.bfloat16, enabled=engine.amp):
            crop_embeddings = model.embed_images(crops.flatten(0, 1)).float()
            if "report" in batchdata:
                output["text_embedding"] = model.embed_reports(list(batchdata["report"])).float()
        output["image_embedding"] = F.normalize(crop_embeddings.view(batch, per_volume, -1).mean(1), dim=-1)
        return output
