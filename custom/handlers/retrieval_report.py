"""Report <-> volume retrieval of an ``EmbeddingEvaluator`` run: metrics file and a retrieval sheet figure.

Attached to :class:`~custom.engines.embedding_evaluator.EmbeddingEvaluator` over a split with reports. It collects
every volume's embedding and its report's embedding (in dataset order, by the items' ``index``), then writes
``retrieval_metrics.json`` (:func:`custom.evaluation.retrieval.retrieval_metrics`: report->volume and
volume->report Recall@1/5/10, median ranks, the chance levels k/N, the gallery size) and ``retrieval_sheet.png``
(:func:`custom.evaluation.figures.plot_retrieval_sheet`: the first ``sheet_queries`` reports, each with its top-3
volumes as mid-slice thumbnails, the true volume marked where it is among them and always shown last with its rank).
Every metric also goes into ``engine.state.metrics`` with a ``retrieval_`` prefix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
import torch
from ignite.engine import Engine

from custom.evaluation.figures import mid_slice, plot_retrieval_sheet
from custom.evaluation.retrieval import retrieval_metrics, retrieval_ranks
from custom.handlers.embedding_collector import EmbeddingCollector
from custom.transforms.volume_checks import load_nifti_checked

__all__ = ["RetrievalReport"]


class RetrievalReport(EmbeddingCollector):
    def __init__(
        self,
        rows: Sequence[dict],
        output_dir: str,
        ks: Sequence[int] = (1, 5, 10),
        sheet_queries: int = 4,
        top_k: int = 3,
        hu_window: Sequence[float] = (-1000.0, 1000.0),
    ) -> None:
        self.rows = list(rows)
        self.output_dir = output_dir
        self.ks = tuple(int(k) for k in ks)
        self.sheet_queries = int(sheet_queries)
        self.top_k = int(top_k)
        self.hu_window = tuple(float(v) for v in hu_window)
        self.metrics: dict | None = None

    def _thumbnail(self, index: int) -> np.ndarray:
        # a thumbnail for the sheet only: the volume already passed the loaders' checks, size floor included
        array, _ = load_nifti_checked(self.rows[index]["image"], min_voxels=1)
        low, high = self.hu_window
        return mid_slice(np.clip((array.astype(np.float32) - low) / (high - low), 0.0, 1.0))

    def finish(self, engine: Engine, indices: list[int], images: torch.Tensor, texts: torch.Tensor | None) -> None:
        if texts is None:
            raise ValueError(
                "RetrievalReport: expected report embeddings (a split whose rows have 'report'), found none"
            )
        dataset_index = indices
        metrics = retrieval_metrics(images, texts, self.ks)
        metrics["gallery_size"] = len(dataset_index)
        self.metrics = metrics
        for name, value in metrics.items():
            engine.state.metrics[f"retrieval_{name}"] = value
        os.makedirs(self.output_dir, exist_ok=True)
        with open(os.path.join(self.output_dir, "retrieval_metrics.json"), "w", encoding="utf-8") as f:
            json.dump(metrics, f, indent=1)
        similarity = texts @ images.T  # (reports, volumes)
        queries = list(range(min(self.sheet_queries, len(dataset_index))))
        ranked = [similarity[q].argsort(descending=True, stable=True)[: self.top_k].tolist() for q in queries]
        true_rank = retrieval_ranks(similarity)[queries].tolist()  # ties count against the query, as in the metrics
        shown = sorted({v for r in ranked for v in r} | set(queries))
        thumbnails = {v: self._thumbnail(dataset_index[v]) for v in shown}
        plot_retrieval_sheet(
            [self.rows[dataset_index[q]]["report"] for q in queries],
            ranked,
            queries,
            true_rank,
            [thumbnails.get(v) for v in range(len(dataset_index))],
            os.path.join(self.output_dir, "retrieval_sheet.png"),
            self.top_k,
            title=f"report -> volume retrieval (gallery {len(dataset_index)}, "
            f"R@1 {metrics['report_to_volume_R1']:.2f}, chance {metrics['chance_R1']:.2f})",
        )
